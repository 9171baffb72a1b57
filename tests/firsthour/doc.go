// Package firsthour tests what a new user meets in the first hour, with the
// real binaries: --version and `version` on meshd, sentry and meshctl; help
// that shows boolean flags plainly; a fatal error printed once with one
// prefix; sentry refusing a token from a data dir it never ran in and a
// second sentry on its data dir; meshd refusing --sentry-address without a
// port; and meshd saying once, loudly, and in its health answers, what is
// wrong when it cannot get an identity and retrying will not help.
package firsthour
