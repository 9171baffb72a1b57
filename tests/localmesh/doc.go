// Package localmesh proves `meshctl init` and `meshctl run` with the real
// binaries: a local sentry, two apps with their sidecars finding each other
// by mDNS, a secure call the callee sees with the caller's identity, the
// app's exit code as meshctl's, and SIGINT leaving no process behind. mDNS
// multicasts, so the test runs inside a network namespace it creates
// (tests/netnstest).
package localmesh
