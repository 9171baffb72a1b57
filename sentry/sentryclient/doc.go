// Package sentryclient is the sidecar side of sentry: it asks sentry for
// workload certificates (it implements certs.Fetcher, so it feeds a
// certs.Source) and follows sentry's trust bundle.
//
// The client verifies sentry's serving certificate (SPIFFE ID
// spiffe://{td}/ns/meshd-system/sentry) against a trust bundle it keeps up
// to date itself: it starts from the anchors given to New and replaces them
// with every newer bundle sentry sends on the WatchTrustBundle stream or in a
// SignCertificate answer. A client that only held the old root before a root
// rotation therefore keeps connecting after sentry switches to the new one.
// Bundle versions only move forward, so a stale answer never replaces a newer
// bundle.
package sentryclient
