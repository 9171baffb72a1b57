package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names and paths of what the injector adds.
const (
	ContainerName    = "meshd"
	TokenVolume      = "meshd-token"
	BundleVolume     = "meshd-trust-bundle"
	TokenDir         = "/var/run/secrets/meshd.io/token"
	BundleDir        = "/var/run/secrets/meshd.io/trust"
	TokenPath        = TokenDir + "/token"
	BundlePath       = BundleDir + "/ca.crt"
	InternalPortName = "meshd-internal"
	PolicyVolume     = "meshd-policy"
	PolicyDir        = "/var/run/meshd/policy"
	// LabelAppID is set on an injected pod: its app ID (the key part 1's
	// resolver reads from Services and EndpointSlices).
	LabelAppID = "meshd.io/app-id"
)

// Ports of the injected sidecar (daprd's defaults).
const (
	HTTPPort     = 3500
	GRPCPort     = 50001
	InternalPort = 50002
	PublicPort   = 3501
	MetricsPort  = 9090
)

// Defaults of Config.
const (
	DefaultImage            = "ghcr.io/meshd/meshd:latest"
	DefaultTokenAudience    = "meshd"
	DefaultBundleConfigMap  = "meshd-trust-bundle"
	DefaultSentryAddress    = "meshd-sentry.meshd-system.svc:50003"
	DefaultResolver         = "kubernetes"
	DefaultTokenTTL         = 3600
	DefaultRunAsUser        = 65532
	DefaultCPURequest       = "50m"
	DefaultMemoryRequest    = "64Mi"
	DefaultMemoryLimit      = "256Mi"
	DefaultStartupThreshold = 120
)

// Config is what every injected sidecar shares.
type Config struct {
	Image           string
	PullPolicy      corev1.PullPolicy // "": IfNotPresent
	TrustDomain     string            // "": meshd's default (cluster.local)
	SentryAddress   string
	TokenAudience   string // sentry's --kube-token-audience
	TokenTTLSeconds int64
	BundleConfigMap string
	Resolver        string // --resolver of the sidecars
	ResolverConfig  string // --resolver-config ("": none)
	// ControlPlaneAddress and ControlPlaneNamespace are the sidecars'
	// --control-plane-address and --control-plane-namespace with Resolver
	// "xds" and no ResolverConfig: the control plane's Service and
	// namespace, the same for every pod, so nothing per namespace is needed.
	ControlPlaneAddress, ControlPlaneNamespace string
	LogLevel                                   string // "": meshd's default
	LogFormat                                  string // "": meshd's default
	// PolicyConfigMap, when set, is mounted (optional) as the pod's
	// namespace policy at PolicyDir/{namespace}/ and the sidecar gets
	// --policy-dir PolicyDir: namespace policies without a control plane
	// (mesh-wide rules need the control plane: a pod cannot mount another
	// namespace's ConfigMap). Empty: the sidecar gets its policies from
	// the control plane (--resolver xds) or has none.
	PolicyConfigMap string
	// PolicyDefault is --policy-default of the sidecars ("": meshd's).
	PolicyDefault string
	// ExtraArgs are appended to every sidecar's arguments (after the ones
	// the injector sets, so a later flag wins where meshd allows it).
	ExtraArgs []string
	// Resources of the sidecar container; zero: DefaultCPURequest,
	// DefaultMemoryRequest, DefaultMemoryLimit.
	Resources corev1.ResourceRequirements
	RunAsUser int64 // 0: DefaultRunAsUser
	// Version is written to the meshd.io/injected annotation.
	Version string
}

func (c *Config) setDefaults() error {
	if c.Image == "" {
		c.Image = DefaultImage
	}
	if c.PullPolicy == "" {
		c.PullPolicy = corev1.PullIfNotPresent
	}
	if c.SentryAddress == "" {
		c.SentryAddress = DefaultSentryAddress
	}
	if c.TokenAudience == "" {
		c.TokenAudience = DefaultTokenAudience
	}
	if c.TokenTTLSeconds == 0 {
		c.TokenTTLSeconds = DefaultTokenTTL
	}
	if c.TokenTTLSeconds < 600 {
		return fmt.Errorf("injector: token TTL %ds: the API server needs at least 600", c.TokenTTLSeconds)
	}
	if c.BundleConfigMap == "" {
		c.BundleConfigMap = DefaultBundleConfigMap
	}
	if c.Resolver == "" {
		c.Resolver = DefaultResolver
	}
	switch {
	case c.Resolver != "xds" && (c.ControlPlaneAddress != "" || c.ControlPlaneNamespace != ""):
		return fmt.Errorf("injector: a control plane address for sidecars on resolver %q: only resolver xds uses one", c.Resolver)
	case c.Resolver == "xds" && c.ResolverConfig == "" && c.ControlPlaneAddress == "":
		return errors.New("injector: sidecars on resolver xds need the control plane's address (or a --resolver-config file in the image)")
	case c.Resolver == "xds" && c.ResolverConfig != "" && c.ControlPlaneAddress != "":
		return errors.New("injector: sidecars on resolver xds get the control plane's address or a --resolver-config file, not both")
	case c.Resolver == "xds" && c.PolicyConfigMap != "":
		// Its --policy-dir would win over the control plane's policies,
		// mesh-wide rules included.
		return fmt.Errorf("injector: policy ConfigMap %q for sidecars on resolver xds: they get their policies from the control plane", c.PolicyConfigMap)
	}
	if c.RunAsUser == 0 {
		c.RunAsUser = DefaultRunAsUser
	}
	if c.RunAsUser < 0 {
		return errors.New("injector: the sidecar's user must not be negative (0 is root, which is refused)")
	}
	if c.Resources.Requests == nil && c.Resources.Limits == nil {
		c.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse(DefaultCPURequest),
				corev1.ResourceMemory: resource.MustParse(DefaultMemoryRequest),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(DefaultMemoryLimit)},
		}
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	return nil
}

// Injected reports whether pod already holds the meshd sidecar.
func Injected(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ContainerName {
			return true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == ContainerName {
			return true
		}
	}
	return false
}

// Sidecar is the meshd container for app in namespace ns.
func (c *Config) Sidecar(app App, ns string) corev1.Container {
	args := []string{
		"--app-id", app.ID,
		"--app-protocol", app.Protocol,
		"--sentry-address", c.SentryAddress,
		"--trust-anchors-file", BundlePath,
		"--token-file", TokenPath,
		"--resolver", c.Resolver,
		"--http-port", strconv.Itoa(HTTPPort),
		"--grpc-port", strconv.Itoa(GRPCPort),
		"--internal-port", strconv.Itoa(InternalPort),
		"--public-port", strconv.Itoa(PublicPort),
		"--metrics-port", strconv.Itoa(MetricsPort),
	}
	if app.Port != 0 {
		args = append(args, "--app-port", strconv.Itoa(app.Port))
	}
	if c.TrustDomain != "" {
		args = append(args, "--trust-domain", c.TrustDomain)
	}
	if c.ResolverConfig != "" {
		args = append(args, "--resolver-config", c.ResolverConfig)
	}
	if c.ControlPlaneAddress != "" {
		args = append(args, "--control-plane-address", c.ControlPlaneAddress)
	}
	if c.ControlPlaneNamespace != "" {
		args = append(args, "--control-plane-namespace", c.ControlPlaneNamespace)
	}
	if app.HealthCheck {
		args = append(args, "--enable-app-health-check")
		if app.HealthPath != "" {
			args = append(args, "--app-health-check-path", app.HealthPath)
		}
		if app.HealthPeriod != 0 {
			args = append(args, "--app-health-probe-interval", app.HealthPeriod.String())
		}
		if app.HealthTimeout != 0 {
			args = append(args, "--app-health-probe-timeout", app.HealthTimeout.String())
		}
		if app.HealthThresh != 0 {
			args = append(args, "--app-health-threshold", strconv.Itoa(app.HealthThresh))
		}
	}
	if c.PolicyConfigMap != "" {
		args = append(args, "--policy-dir", PolicyDir)
	}
	if c.PolicyDefault != "" {
		args = append(args, "--policy-default", c.PolicyDefault)
	}
	if lvl := app.LogLevel; lvl != "" {
		args = append(args, "--log-level", lvl)
	} else if c.LogLevel != "" {
		args = append(args, "--log-level", c.LogLevel)
	}
	if c.LogFormat != "" {
		args = append(args, "--log-format", c.LogFormat)
	}
	args = append(args, c.ExtraArgs...)

	always := corev1.ContainerRestartPolicyAlways
	no, yes := false, true
	uid := c.RunAsUser
	health := func(period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/v1.0/healthz", Port: intOrName("meshd-public"), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1, SuccessThreshold: 1,
		}
	}
	mounts := []corev1.VolumeMount{
		{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
		{Name: BundleVolume, MountPath: BundleDir, ReadOnly: true},
	}
	if c.PolicyConfigMap != "" {
		mounts = append(mounts, corev1.VolumeMount{Name: PolicyVolume, MountPath: PolicyDir + "/" + ns, ReadOnly: true})
	}
	return corev1.Container{
		Name:            ContainerName,
		Image:           c.Image,
		ImagePullPolicy: c.PullPolicy,
		Args:            args,
		RestartPolicy:   &always,
		Env: []corev1.EnvVar{
			{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		},
		Ports: []corev1.ContainerPort{
			{Name: InternalPortName, ContainerPort: InternalPort, Protocol: corev1.ProtocolTCP},
			{Name: "meshd-public", ContainerPort: PublicPort, Protocol: corev1.ProtocolTCP},
			{Name: "meshd-metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
		},
		// The app starts once meshd holds its certificate (a native
		// sidecar's startup probe gates the next containers).
		StartupProbe:   health(1, DefaultStartupThreshold),
		ReadinessProbe: health(5, 3),
		LivenessProbe:  health(10, 6),
		Resources:      c.Resources,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Privileged:               &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts:             mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// Volumes are the token and trust-bundle volumes the sidecar mounts.
func (c *Config) Volumes() []corev1.Volume {
	ttl := c.TokenTTLSeconds
	optional := true
	vols := []corev1.Volume{
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: c.TokenAudience, ExpirationSeconds: &ttl, Path: "token",
			}}},
		}}},
		{Name: BundleVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: c.BundleConfigMap},
			Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
		}}},
	}
	if c.PolicyConfigMap != "" {
		vols = append(vols, corev1.Volume{Name: PolicyVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: c.PolicyConfigMap}, Optional: &optional,
		}}})
	}
	return vols
}

// AppEnv is what the injector adds to every app container.
func AppEnv(app App) []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: "DAPR_HTTP_PORT", Value: strconv.Itoa(HTTPPort)},
		{Name: "DAPR_GRPC_PORT", Value: strconv.Itoa(GRPCPort)},
	}
	if app.Transparent {
		env = append(env, corev1.EnvVar{Name: "HTTP_PROXY", Value: "http://127.0.0.1:" + strconv.Itoa(HTTPPort)})
	}
	return env
}

// Mutate returns the pod with the sidecar injected. pod is not changed.
func (c *Config) Mutate(pod *corev1.Pod, app App) *corev1.Pod {
	out := pod.DeepCopy()
	out.Spec.InitContainers = append([]corev1.Container{c.Sidecar(app, pod.Namespace)}, out.Spec.InitContainers...)
	out.Spec.Volumes = append(out.Spec.Volumes, c.Volumes()...)
	for i := range out.Spec.Containers {
		ct := &out.Spec.Containers[i]
		for _, e := range AppEnv(app) {
			if !hasEnv(ct.Env, e.Name) {
				ct.Env = append(ct.Env, e)
			}
		}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationStatus] = c.Version
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	// The app Services controller selects the app's pods by this label
	// (annotations cannot be selected).
	out.Labels[LabelAppID] = app.ID
	return out
}

func hasEnv(env []corev1.EnvVar, name string) bool {
	for _, e := range env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Patch is the JSON patch from pod to the injected pod: whole fields
// replaced ("add" replaces a member that exists), so it applies to exactly
// the pod it was computed from.
func (c *Config) Patch(pod *corev1.Pod, app App) ([]byte, error) {
	out := c.Mutate(pod, app)
	ops := []patchOp{
		{Op: "add", Path: "/spec/initContainers", Value: out.Spec.InitContainers},
		{Op: "add", Path: "/spec/volumes", Value: out.Spec.Volumes},
		{Op: "add", Path: "/spec/containers", Value: out.Spec.Containers},
		{Op: "add", Path: "/metadata/annotations", Value: out.Annotations},
		{Op: "add", Path: "/metadata/labels", Value: out.Labels},
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("injector: patch: %w", err)
	}
	return b, nil
}

func intOrName(name string) intstr.IntOrString { return intstr.FromString(name) }
