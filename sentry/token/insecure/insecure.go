// Package insecure is a token validator that accepts every caller. It is for
// local development only: anyone who can reach sentry gets any identity.
package insecure

import (
	"context"
	"log/slog"

	"github.com/meshd/meshd/certs"
)

// Validator accepts any token, including none.
type Validator struct{}

// New returns the validator and logs a loud warning.
func New(log *slog.Logger) Validator {
	if log != nil {
		log.Warn("sentry: INSECURE token validator: ANY caller gets ANY identity it asks for. " +
			"Never use --token-validator insecure outside local development.")
	}
	return Validator{}
}

// Validate always succeeds.
func (Validator) Validate(context.Context, string, certs.Identity) error { return nil }
