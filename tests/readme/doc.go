// Package readme runs the README's commands as a new user would paste them:
// every fenced block whose info string carries "readme-test" is run by
// bash at the repository root. The by-hand path binds the default ports
// (sentry 50003 and 8080, meshd 3500, 50001, 50002, 9090, the app 3000), so
// it runs inside a network namespace of its own (tests/netnstest), where no
// other test or engineer holds them.
package readme
