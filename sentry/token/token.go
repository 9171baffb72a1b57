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
// to Unauthenticated and ErrDenied to PermissionDenied.
var (
	// ErrMissing: no token was presented.
	ErrMissing = errors.New("token: missing")
	// ErrInvalid: the token is malformed, forged or expired.
	ErrInvalid = errors.New("token: invalid")
	// ErrDenied: the token is genuine but not for the requested identity.
	ErrDenied = errors.New("token: not valid for the requested identity")
)
