package token

import (
	"context"
	"errors"

	"github.com/meshd/meshd/certs"
)

// Validator checks that token entitles its bearer to identity id. It returns
// nil, or an error wrapping ErrMissing, ErrInvalid or ErrDenied.
type Validator interface {
	Validate(ctx context.Context, token string, id certs.Identity) error
}

// Errors a Validator wraps. The gRPC service maps ErrMissing and ErrInvalid
// to Unauthenticated, ErrDenied to PermissionDenied and ErrUnavailable to
// Unavailable.
var (
	// ErrMissing: no token was presented.
	ErrMissing = errors.New("token: missing")
	// ErrInvalid: the token is malformed, forged or expired.
	ErrInvalid = errors.New("token: invalid")
	// ErrDenied: the token is genuine but not for the requested identity.
	ErrDenied = errors.New("token: not valid for the requested identity")
	// ErrUnavailable: the validator could not judge the token (its
	// authority, e.g. the Kubernetes API server, is unreachable or refuses
	// sentry itself). Nothing is signed; the caller may retry.
	ErrUnavailable = errors.New("token: validator unavailable")
)
