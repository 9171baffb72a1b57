// Package cli holds what the three commands (meshd, sentry, meshctl) share
// on their command line: the version (`--version` and a `version`
// subcommand, from -ldflags or the module's build information), the one way
// a fatal error is printed (once, as "PROGRAM: message"), and help that shows
// a boolean flag as plain `--flag`.
package cli
