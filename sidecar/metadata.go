package sidecar

import (
	"runtime/debug"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"

	"github.com/meshd/meshd/internal/version"
	"github.com/meshd/meshd/proxy/daprapi"
)

// Version is meshd's version: "meshd-" and the version `make build` or
// `make image` linked in (internal/version), or the module version the Go
// toolchain stamped into a released build; "meshd-devel" otherwise.
var Version = func() string {
	if version.Version != "dev" {
		return "meshd-" + version.Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return "meshd-" + bi.Main.Version
	}
	return "meshd-devel"
}()

// metadata is the sidecar's answer to Dapr's metadata API (GET
// /v1.0/metadata, gRPC GetMetadata): what meshd really has. Building
// blocks it does not have (components, subscriptions, HTTP endpoints,
// actors) stay empty.
func (s *sidecar) metadata() *runtimev1pb.GetMetadataResponse {
	cfg := &s.cfg
	ext := map[string]string{
		daprapi.ExtRuntimeVersion: Version,
		daprapi.ExtNamespace:      s.id.Namespace,
		daprapi.ExtSPIFFEID:       s.id.String(),
		daprapi.ExtMTLS:           "on",
		daprapi.ExtAppHealth:      "unchecked",
	}
	if cfg.Insecure {
		ext[daprapi.ExtMTLS] = "off"
		delete(ext, daprapi.ExtSPIFFEID)
	}
	if s.src != nil {
		if svid, err := s.src.GetX509SVID(); err == nil && len(svid.Certificates) > 0 {
			ext[daprapi.ExtSVIDExpiry] = svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)
		}
	}
	features := []string{"ServiceInvocation"}
	if !cfg.Insecure {
		features = append(features, "mTLS")
	}
	if cfg.PolicyDir != "" || cfg.ConfigFile != "" {
		features = append(features, "AccessControl")
	}
	if cfg.ResiliencyFile != "" {
		features = append(features, "Resiliency")
	}
	if s.pcfg.Tracer.Exporting() {
		features = append(features, "Tracing")
	}
	if cfg.APIToken != "" {
		features = append(features, "APIToken")
	}
	m := &runtimev1pb.GetMetadataResponse{
		Id:               s.id.AppID,
		RuntimeVersion:   Version,
		EnabledFeatures:  features,
		ExtendedMetadata: ext,
		ActorRuntime:     &runtimev1pb.ActorRuntime{RuntimeStatus: runtimev1pb.ActorRuntime_DISABLED},
	}
	if cfg.AppPort > 0 {
		ac := &runtimev1pb.AppConnectionProperties{
			Port: int32(cfg.AppPort), Protocol: cfg.AppProtocol, ChannelAddress: cfg.AppChannelAddress,
			MaxConcurrency: int32(cfg.AppMaxConcurrency),
		}
		if cfg.EnableAppHealthCheck {
			ac.Health = &runtimev1pb.AppConnectionHealthProperties{
				HealthCheckPath:     cfg.AppHealthCheckPath,
				HealthProbeInterval: cfg.AppHealthProbeInterval.String(),
				HealthProbeTimeout:  cfg.AppHealthProbeTimeout.String(),
				HealthThreshold:     int32(cfg.AppHealthThreshold),
			}
			ext[daprapi.ExtAppHealth] = "unhealthy"
			if s.pcfg.AppHealth != nil && s.pcfg.AppHealth.Healthy() {
				ext[daprapi.ExtAppHealth] = "healthy"
			}
		}
		m.AppConnectionProperties = ac
	}
	return m
}
