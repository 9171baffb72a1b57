package workloadapi

import "github.com/meshd/meshd/certs"

// certs.Source is the Source meshd serves.
var _ Source = (*certs.Source)(nil)
