// Package netnstest keeps tests that multicast (mDNS) out of the machine's
// root network namespace, where multicast would leave through the real
// network card.
//
// A test that multicasts starts with
//
//	if !netnstest.Run(t, netnstest.Opts{}) {
//		return // the parent: the test ran in a child process, in a fresh netns
//	}
//	... the scenario, now inside a private network namespace ...
//
// Run re-executes the test binary for that one test (or benchmark) under
// `unshare -n` (or `ip netns exec NAME` for namespaces the test made with
// NewHosts), with an environment marker. The child checks that its network
// namespace is not the one of PID 1 (it fails loudly if it is), brings lo up
// with the MULTICAST flag and a 224.0.0.0/4 route, and runs the scenario.
// Where no namespace can be made (not root), Run skips the test with a
// message that says so.
//
// Named namespaces (NewHosts, NewNet, or a test's own "ip netns add") are
// entered from the test process with DialIn, which makes a socket on a
// thread switched into the namespace and back, and emptied with KillIn,
// which kills what runs there except the calling process: a thread that
// could not switch back stays in the namespace, and when it is the main
// thread the whole process is listed in it.
package netnstest
