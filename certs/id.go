package certs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "cluster.local"

// MaxAppIDLength is the longest app ID meshd accepts.
const MaxAppIDLength = 64

// Identity is a workload identity: an app ID in a namespace of a trust domain.
// It is comparable, so it can be used as a map key.
type Identity struct {
	TrustDomain spiffeid.TrustDomain
	Namespace   string
	AppID       string
}

var (
	errEmptyAppID     = errors.New("app ID is empty")
	errAppIDDot       = errors.New("app ID must not contain a dot")
	errAppIDLong      = fmt.Errorf("app ID is longer than %d characters", MaxAppIDLength)
	errEmptyNamespace = errors.New("namespace is empty")
	errNotWorkloadID  = errors.New("SPIFFE ID path is not of the form /ns/{namespace}/{app-id}")
)

// ValidateAppID reports whether id is a usable app ID: non-empty, at most
// MaxAppIDLength characters, no dots (a dot separates app and namespace in
// invocation targets), and a valid SPIFFE path segment.
func ValidateAppID(id string) error {
	switch {
	case id == "":
		return wrap(errEmptyAppID)
	case len(id) > MaxAppIDLength:
		return wrap(errAppIDLong)
	case strings.Contains(id, "."):
		return wrap(errAppIDDot)
	}
	if err := spiffeid.ValidatePathSegment(id); err != nil {
		return fmt.Errorf("certs: app ID %q: %w", id, err)
	}
	return nil
}

// ValidateNamespace reports whether ns is a usable namespace: non-empty, no
// dots, and a valid SPIFFE path segment.
func ValidateNamespace(ns string) error {
	if ns == "" {
		return wrap(errEmptyNamespace)
	}
	if strings.Contains(ns, ".") {
		return fmt.Errorf("certs: namespace %q must not contain a dot", ns)
	}
	if err := spiffeid.ValidatePathSegment(ns); err != nil {
		return fmt.Errorf("certs: namespace %q: %w", ns, err)
	}
	return nil
}

// NewIdentity validates its parts and returns the identity.
func NewIdentity(trustDomain, namespace, appID string) (Identity, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return Identity{}, fmt.Errorf("certs: trust domain %q: %w", trustDomain, err)
	}
	if err := ValidateNamespace(namespace); err != nil {
		return Identity{}, err
	}
	if err := ValidateAppID(appID); err != nil {
		return Identity{}, err
	}
	return Identity{TrustDomain: td, Namespace: namespace, AppID: appID}, nil
}

// ID returns the SPIFFE ID spiffe://{td}/ns/{namespace}/{app-id}.
// The identity must be valid (made by NewIdentity or IdentityFromID).
func (i Identity) ID() spiffeid.ID {
	id, err := spiffeid.FromSegments(i.TrustDomain, "ns", i.Namespace, i.AppID)
	if err != nil {
		// Unreachable for identities built by this package.
		return spiffeid.ID{}
	}
	return id
}

// String returns the SPIFFE ID as a string.
func (i Identity) String() string { return i.ID().String() }

// IdentityFromID parses a workload SPIFFE ID of the form
// spiffe://{td}/ns/{namespace}/{app-id}.
func IdentityFromID(id spiffeid.ID) (Identity, error) {
	if id.IsZero() {
		return Identity{}, wrap(errors.New("SPIFFE ID is empty"))
	}
	parts := strings.Split(id.Path(), "/")
	// "/ns/a/b" splits into "", "ns", "a", "b".
	if len(parts) != 4 || parts[0] != "" || parts[1] != "ns" {
		return Identity{}, fmt.Errorf("certs: %q: %w", id, errNotWorkloadID)
	}
	if err := ValidateNamespace(parts[2]); err != nil {
		return Identity{}, err
	}
	if err := ValidateAppID(parts[3]); err != nil {
		return Identity{}, err
	}
	return Identity{TrustDomain: id.TrustDomain(), Namespace: parts[2], AppID: parts[3]}, nil
}

// ParseIdentity parses a workload SPIFFE ID string.
func ParseIdentity(s string) (Identity, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return Identity{}, fmt.Errorf("certs: SPIFFE ID %q: %w", s, err)
	}
	return IdentityFromID(id)
}

func wrap(err error) error { return fmt.Errorf("certs: %w", err) }
