// Package freeport hands out loopback TCP ports for child processes to bind
// (tests, the demo, the benchmarks). A port is taken below the kernel's
// ephemeral range, so that an outgoing connection of some other process
// cannot take it between the check and the moment the child binds it, and
// never twice in one process. The start is random, so that processes
// running side by side (test packages in parallel) rarely try the same
// ports.
package freeport
