//go:build !unix

package freeport

// claim is a no-op where flock is not available.
func claim(int) bool { return true }
