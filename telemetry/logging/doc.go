// Package logging builds the slog logger of a meshd process (meshd, sentry)
// from its --log-level and --log-format flags.
package logging
