// Package freeport hands out loopback TCP ports for child processes to bind
// (tests, the demo, the benchmarks). A port is taken below the kernel's
// ephemeral range, so that an outgoing connection of some other process
// cannot take it between the check and the moment the child binds it, and
// never twice on the machine while its taker runs: each port taken is
// claimed with a lock file in $TMPDIR/meshd-freeport, held until the
// process exits, so test packages running side by side (or the tests of
// two checkouts) never hand out the same port. The start is random, so they
// rarely even try the same ones.
package freeport
