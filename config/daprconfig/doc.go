// Package daprconfig reads the observability sections of a Dapr
// Configuration document: spec.tracing and spec.metrics. It is the
// counterpart of policy/accesscontrol, which reads spec.accessControl of
// the same --config file; each parser looks only at its own sections, so
// neither breaks the other.
//
// Inside spec.tracing and spec.metrics unknown keys are errors (with file
// and line), so a typo never silently turns tracing or metrics off. Fields
// Dapr documents but meshd does not act on (zipkin, stdout, metrics rules)
// are accepted and reported in Observability.Ignored.
package daprconfig
