// Package kubernetes implements sentry's kubernetes token validator
// (--token-validator kubernetes): a sidecar in a pod presents a projected
// service-account token, and sentry asks the API server who it is.
//
// The identity is derived from what the API server proves, never from the
// request:
//
//  1. TokenReview (authentication.k8s.io/v1) with the token and sentry's
//     audience (default "meshd"). The API server checks the signature,
//     expiry, audience and that the object the token is bound to still
//     exists with the same UID. Not authenticated: refused.
//  2. The reviewed user must be a service account
//     (system:serviceaccount:{namespace}:{name}); the namespace of the
//     identity is that namespace.
//  3. The token must be bound to a pod: the review's extra fields
//     authentication.kubernetes.io/pod-name and .../pod-uid. sentry reads
//     that pod; it must exist with that UID, run as that service account
//     and not have terminated.
//  4. The app ID is the pod's annotation meshd.io/app-id, or Dapr's
//     dapr.io/app-id (both present and different: refused).
//
// A request for any other app ID or namespace than the derived one is
// refused with token.ErrDenied (PermissionDenied); a token that is not
// genuine, expired, for another audience, not bound to a pod or bound to a
// pod that is gone wraps token.ErrInvalid (Unauthenticated); an API server
// that cannot be reached or refuses sentry itself (RBAC: the missing verb
// is named) wraps token.ErrUnavailable (Unavailable). Every error says why.
//
// Successful reviews may be cached for a short TTL (Options.CacheTTL), keyed
// by the SHA-256 of the token, bounded in size and never beyond the token's
// own expiry, so that a burst of bootstraps with one token costs one review.
//
// sentry's RBAC: create tokenreviews (authentication.k8s.io, cluster
// scope) and get pods (core, in every namespace with meshd pods).
// NewFromOptions checks both with SelfSubjectAccessReviews at start.
package kubernetes
