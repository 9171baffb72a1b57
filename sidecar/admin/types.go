package admin

import "time"

// Paths the endpoint serves.
const (
	PathStatus    = "/admin/v1/status"
	PathDecisions = "/admin/v1/decisions"
	// Prefix is the mux pattern of the whole endpoint.
	Prefix = "/admin/"
)

// App health values of Status.App.Health.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthUnchecked = "unchecked" // no --enable-app-health-check
	HealthNoApp     = "no app"    // no --app-port
)

// PolicyOff is Status.Policy.Mode when no policy hook runs: no policy
// directory, no accessControl, default allow, so every call is allowed and
// no decision is made or kept.
const PolicyOff = "off"

// Status is what the sidecar is, GET /admin/v1/status.
type Status struct {
	AppID       string    `json:"appId"`
	Namespace   string    `json:"namespace"`
	TrustDomain string    `json:"trustDomain"`
	SPIFFEID    string    `json:"spiffeId,omitempty"` // "" with --insecure
	MTLS        bool      `json:"mtls"`
	Version     string    `json:"version"`
	Started     time.Time `json:"started"`
	Ready       bool      `json:"ready"`

	Addresses Addresses `json:"addresses"`
	App       App       `json:"app"`
	// Certificate is the current workload certificate (nil with --insecure).
	Certificate *Certificate `json:"certificate,omitempty"`
	// TrustBundle holds the roots the sidecar verifies its peers with.
	TrustBundle []Root   `json:"trustBundle"`
	Policy      Policy   `json:"policy"`
	Resolver    Resolver `json:"resolver"`
	// Calls are the totals counted so far (nil when metrics are off):
	// two readings give calls/s and the error rate.
	Calls *Calls `json:"calls,omitempty"`
}

// Addresses the sidecar listens on ("" for one that is off; a unix socket
// path for the APIs with --unix-domain-socket).
type Addresses struct {
	HTTP      string `json:"http"`
	GRPC      string `json:"grpc"`
	Internal  string `json:"internal"`
	Advertise string `json:"advertise"` // the internal port as other sidecars reach it
	Metrics   string `json:"metrics,omitempty"`
	Admin     string `json:"admin,omitempty"`
	Public    string `json:"public,omitempty"`
}

// App is the local app.
type App struct {
	Port     int    `json:"port,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Health   string `json:"health"` // HealthHealthy, HealthUnhealthy, HealthUnchecked, HealthNoApp
}

// Certificate is a workload certificate.
type Certificate struct {
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	Serial    string    `json:"serial"`
	Rotations uint64    `json:"rotations"` // renewals since the first
}

// Root is a root certificate of the trust bundle.
type Root struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	SHA256   string    `json:"sha256"` // of the DER, hex
}

// Policy is how the sidecar authorizes inbound calls.
type Policy struct {
	// Mode is "enforce", "audit" (accessControl in audit mode only),
	// "mixed" (some accessControl in audit mode) or PolicyOff.
	Mode string `json:"mode"`
	// Default decides namespaces without policy: "allow" or "deny".
	Default    string   `json:"default"`
	Dir        string   `json:"dir,omitempty"`
	Config     string   `json:"config,omitempty"`
	FromXDS    bool     `json:"fromXds,omitempty"` // policies pushed by the control plane
	Namespaces []string `json:"namespaces"`
	Mesh       bool     `json:"meshWide"` // _mesh rules loaded
	Files      int      `json:"files"`
	AuditFiles []string `json:"auditFiles,omitempty"`
	// Reloads and ReloadFailures count policy reloads after the first load;
	// LastReloadError is the last one's error, if it failed.
	Reloads         uint64 `json:"reloads"`
	ReloadFailures  uint64 `json:"reloadFailures"`
	LastReloadError string `json:"lastReloadError,omitempty"`
	// Allowed, Denied and Audited count decisions so far.
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
	Audited uint64 `json:"audited"`
	// RecentKept is how many recent decisions /admin/v1/decisions serves
	// (--policy-recent-decisions; 0: none).
	RecentKept int `json:"recentKept"`
}

// Resolver is where the sidecar finds other apps.
type Resolver struct {
	Name   string `json:"name"`
	Config string `json:"config,omitempty"`
}

// Calls are call totals, all peers summed. An error is an HTTP status of
// 400 or above, or a gRPC status other than OK.
type Calls struct {
	Out       uint64 `json:"out"`
	ErrorsOut uint64 `json:"errorsOut"`
	In        uint64 `json:"in"`
	ErrorsIn  uint64 `json:"errorsIn"`
}

// Decisions is GET /admin/v1/decisions?after=SEQ: the kept decisions
// numbered above SEQ, oldest first.
type Decisions struct {
	// Last is the number of the last decision made: the after of the next
	// request.
	Last uint64 `json:"last"`
	// Missed counts decisions above after that are no longer kept.
	Missed uint64 `json:"missed"`
	// Kept is how many decisions the sidecar keeps.
	Kept      int        `json:"kept"`
	Decisions []Decision `json:"decisions"`
}

// Decision is one policy decision on an inbound call.
type Decision struct {
	Seq         uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	Source      string    `json:"source"` // the caller's SPIFFE ID ("" without mTLS)
	Destination string    `json:"destination"`
	Protocol    string    `json:"protocol"`
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	Query       string    `json:"query,omitempty"`
	Allow       bool      `json:"allow"`
	Audit       bool      `json:"audit,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Rule        string    `json:"rule"`
}
