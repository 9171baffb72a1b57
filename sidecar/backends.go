package sidecar

import (
	"fmt"

	_ "github.com/meshd/meshd/discovery/mdns"   // --resolver mdns
	_ "github.com/meshd/meshd/discovery/static" // --resolver static
)

// The consul, kubernetes and xds backends are linked in by
// backend_{consul,kube,xds}.go unless a build tag leaves them out
// (meshd_noconsul, meshd_nokube, meshd_noxds: docs/performance.md, "Slim
// builds"). mdns and static are always in: they link nothing big.

// omittedBackend returns an error naming the build tag when this build
// left the backend called name out, nil otherwise.
func omittedBackend(name string) error {
	tag := ""
	switch {
	case name == "consul" && !withConsul:
		tag = "meshd_noconsul"
	case name == "kubernetes" && !withKube:
		tag = "meshd_nokube"
	case name == "xds" && !withXDS:
		tag = "meshd_noxds"
	default:
		return nil
	}
	return fmt.Errorf("sidecar: --resolver %s: this meshd was built without it (build tag %s); use a build without that tag", name, tag)
}
