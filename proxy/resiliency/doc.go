// Package resiliency reads Dapr Resiliency documents (apiVersion
// dapr.io/v1alpha1, kind Resiliency) and gives the data plane what it needs
// per call, prepared at load time: a per-attempt timeout, a retry policy
// (constant or exponential backoff, status-code matching), a circuit breaker
// (closed / open / half-open, trip condition in CEL over Dapr's counters) and
// a retry budget.
//
// Only service invocation targets (spec.targets.apps) are used by meshd;
// actors and components are parsed and checked but have no effect.
//
// Hot path: Config.For returns the policy Set of a target with one atomic
// pointer read and one map lookup, and nil (nothing to do) when no policy
// applies; neither allocates. See docs/resiliency.md for the contract and
// the deviations from Dapr.
package resiliency
