// Package decisionlog records policy decisions: every denial (and every
// audit-mode "would deny") is logged with the caller's SPIFFE ID, the
// destination, method, path and the rule or reason; allows are sampled.
// Counters of allows and denials are kept for metrics.
package decisionlog
