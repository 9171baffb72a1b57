package resiliency

import (
	"math/rand/v2"
	"net/http"
	"time"
)

// Backoff policies.
const (
	PolicyConstant    = "constant"
	PolicyExponential = "exponential"
)

// MaxRetriesCap bounds maxRetries: -1 (Dapr's "unlimited", also its
// default) and anything larger mean this many retries. A sidecar that
// retries forever turns a callee's outage into a queue of callers.
const MaxRetriesCap = 10

// Retry is a retries entry.
type Retry struct {
	Name   string
	Policy string // PolicyConstant or PolicyExponential
	// Duration is the constant backoff (default 5s).
	Duration time.Duration
	// Exponential backoff (cenkalti/backoff, as Dapr): the n-th wait is
	// min(InitialInterval × Multiplier^(n-1), MaxInterval), randomized by
	// ± RandomizationFactor. MaxElapsedTime (0: none) stops retrying once
	// that long has passed since the first attempt.
	InitialInterval     time.Duration // default 500ms
	RandomizationFactor float64       // default 0.5
	Multiplier          float64       // default 1.5
	MaxInterval         time.Duration // default 60s
	MaxElapsedTime      time.Duration // default 0
	// MaxRetries as written (-1: unlimited); Retries is the effective
	// number, capped at MaxRetriesCap.
	MaxRetries int
	Retries    int

	// Matching: the statuses to retry. Without a list, the safe default:
	// HTTP 5xx except 501, gRPC Unknown, Aborted, Internal, Unavailable.
	HTTPStatusCodes CodeSet
	GRPCStatusCodes CodeSet
	MatchHTTP       bool // httpStatusCodes was given
	MatchGRPC       bool // gRPCStatusCodes was given
}

var defaultHTTPRetry, defaultGRPCRetry = func() (CodeSet, CodeSet) {
	h, _ := ParseCodes("500,502-599", MinHTTPStatus, MaxHTTPStatus)
	g, _ := ParseCodes("2,10,13,14", MinGRPCCode, MaxGRPCCode)
	return h, g
}()

// FailedHTTP reports whether an HTTP answer status is a failure under this
// policy (retried where safe, counted by circuit breakers).
func (r *Retry) FailedHTTP(status int) bool {
	if r != nil && r.MatchHTTP {
		return r.HTTPStatusCodes.Has(status)
	}
	return defaultHTTPRetry.Has(status)
}

// FailedGRPC reports whether a gRPC status code is a failure under this
// policy. OK (0) never is.
func (r *Retry) FailedGRPC(code int) bool {
	if code == 0 {
		return false
	}
	if r != nil && r.MatchGRPC {
		return r.GRPCStatusCodes.Has(code)
	}
	return defaultGRPCRetry.Has(code)
}

// MayRetryHTTP reports whether an answer with this status may be retried:
// the status is a failure and either the method is idempotent or the
// status was matched explicitly (httpStatusCodes). A 4xx is retried only
// when listed.
func (r *Retry) MayRetryHTTP(status int, idempotent bool) bool {
	if r == nil || !r.FailedHTTP(status) {
		return false
	}
	return idempotent || r.MatchHTTP
}

// MayRetryGRPC reports whether a gRPC status may be retried: gRPC calls are
// never known to be idempotent, so only codes listed in gRPCStatusCodes.
func (r *Retry) MayRetryGRPC(code int) bool {
	return r != nil && r.MatchGRPC && r.FailedGRPC(code)
}

// Backoff returns the wait before retry number n (1 for the first retry).
func (r *Retry) Backoff(n int) time.Duration {
	if r.Policy != PolicyExponential {
		return r.Duration
	}
	iv := float64(r.InitialInterval)
	for i := 1; i < n && iv < float64(r.MaxInterval); i++ {
		iv *= r.Multiplier
	}
	if iv > float64(r.MaxInterval) {
		iv = float64(r.MaxInterval)
	}
	if rf := r.RandomizationFactor; rf > 0 {
		iv += iv * rf * (2*rand.Float64() - 1)
	}
	return time.Duration(iv)
}

// IsIdempotent reports whether an HTTP method is idempotent (RFC 9110 9.2.2).
func IsIdempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}
