package discovery

import "errors"

// DefaultNamespace is the namespace of a target that names none.
const DefaultNamespace = "default"

// Target names an app in a namespace. It is comparable and used as a map key.
type Target struct {
	AppID     string
	Namespace string
}

// String returns "app.namespace".
func (t Target) String() string { return t.AppID + "." + t.Namespace }

// Endpoint is one instance of an app: the address of its sidecar's internal
// (mTLS) port.
type Endpoint struct {
	// Address is host:port.
	Address string
}

// Errors returned by Pick.
var (
	// ErrUnknownTarget means no backend knows the target app.
	ErrUnknownTarget = errors.New("discovery: no endpoints known for app")
	// ErrNoHealthyEndpoint means the app is known but every endpoint is
	// unhealthy or ejected.
	ErrNoHealthyEndpoint = errors.New("discovery: no healthy endpoint for app")
)
