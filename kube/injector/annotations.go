package injector

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The annotations a pod joins the mesh with. Each meshd.io/ name has a
// dapr.io/ synonym (Synonyms); when a pod carries both, they must agree.
const (
	AnnotationInject          = "meshd.io/inject"                  // "true" joins, "false" opts out
	AnnotationAppID           = "meshd.io/app-id"                  // required: a DNS label
	AnnotationAppPort         = "meshd.io/app-port"                // 1-65535; none: a sidecar without an app
	AnnotationAppProtocol     = "meshd.io/app-protocol"            // http (default), https, grpc, grpcs, h2c
	AnnotationAppHealthCheck  = "meshd.io/enable-app-health-check" // "true": meshd probes the app
	AnnotationAppHealthPath   = "meshd.io/app-health-check-path"   // default /healthz
	AnnotationAppHealthPeriod = "meshd.io/app-health-probe-interval"
	AnnotationAppHealthTime   = "meshd.io/app-health-probe-timeout"
	AnnotationAppHealthThresh = "meshd.io/app-health-threshold"
	AnnotationLogLevel        = "meshd.io/log-level"
	// AnnotationTransparent "true" sets HTTP_PROXY in the app containers,
	// so plain http://{app}/ calls go through the sidecar.
	AnnotationTransparent = "meshd.io/transparent"
	// AnnotationStatus is set on an injected pod (the injector's version).
	AnnotationStatus = "meshd.io/injected"
)

// Synonyms maps each meshd.io/ annotation to Dapr's name for it. Dapr
// gives the probe interval in seconds and the timeout in milliseconds
// (plain integers); meshd's names take Go durations, and accept Dapr's
// integers too.
var Synonyms = map[string]string{
	AnnotationInject:          "dapr.io/enabled",
	AnnotationAppID:           "dapr.io/app-id",
	AnnotationAppPort:         "dapr.io/app-port",
	AnnotationAppProtocol:     "dapr.io/app-protocol",
	AnnotationAppHealthCheck:  "dapr.io/enable-app-health-check",
	AnnotationAppHealthPath:   "dapr.io/app-health-check-path",
	AnnotationAppHealthPeriod: "dapr.io/app-health-probe-interval",
	AnnotationAppHealthTime:   "dapr.io/app-health-probe-timeout",
	AnnotationAppHealthThresh: "dapr.io/app-health-threshold",
	AnnotationLogLevel:        "dapr.io/log-level",
}

// App is what a pod's annotations ask of its sidecar.
type App struct {
	ID            string
	Port          int // 0: no app
	Protocol      string
	HealthCheck   bool
	HealthPath    string
	HealthPeriod  time.Duration // 0: meshd's default
	HealthTimeout time.Duration // 0: meshd's default
	HealthThresh  int           // 0: meshd's default
	LogLevel      string        // "": the injector's
	Transparent   bool
}

// annotation reads one annotation by its meshd.io/ name or its dapr.io/
// synonym, and names whichever the pod used (for messages).
func annotation(ann map[string]string, name string) (val, used string, ok bool, err error) {
	v, okM := ann[name]
	syn := Synonyms[name]
	d, okD := "", false
	if syn != "" {
		d, okD = ann[syn]
	}
	switch {
	case okM && okD && strings.TrimSpace(v) != strings.TrimSpace(d):
		return "", name, false, fmt.Errorf("annotations %s %q and %s %q disagree", name, v, syn, d)
	case okM:
		return strings.TrimSpace(v), name, true, nil
	case okD:
		return strings.TrimSpace(d), syn, true, nil
	}
	return "", name, false, nil
}

// Wants reports whether the pod asks to join the mesh: meshd.io/inject or
// dapr.io/enabled "true". A value other than true/false is an error.
func Wants(ann map[string]string) (bool, error) {
	want := false
	for _, name := range []string{AnnotationInject, Synonyms[AnnotationInject]} {
		v, ok := ann[name]
		if !ok {
			continue
		}
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return false, fmt.Errorf("annotation %s %q: want true or false", name, v)
		}
		if !b {
			return false, nil // any opt-out wins
		}
		want = true
	}
	return want, nil
}

var protocols = map[string]bool{"http": true, "https": true, "grpc": true, "grpcs": true, "h2c": true}

// ParseApp reads a pod's annotations. Every error names the annotation.
func ParseApp(ann map[string]string) (App, error) {
	a := App{Protocol: "http"}
	v, used, ok, err := annotation(ann, AnnotationAppID)
	if err != nil {
		return a, err
	}
	if !ok || v == "" {
		return a, fmt.Errorf("annotation %s (or %s) is required to join the mesh", AnnotationAppID, Synonyms[AnnotationAppID])
	}
	if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
		return a, fmt.Errorf("annotation %s %q: the app ID must be a DNS label (%s)", used, v, strings.Join(errs, "; "))
	}
	a.ID = v
	if v, used, ok, err = annotation(ann, AnnotationAppPort); err != nil {
		return a, err
	} else if ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return a, fmt.Errorf("annotation %s %q: want a port number 1-65535", used, v)
		}
		a.Port = p
	}
	if v, used, ok, err = annotation(ann, AnnotationAppProtocol); err != nil {
		return a, err
	} else if ok {
		if !protocols[strings.ToLower(v)] {
			return a, fmt.Errorf("annotation %s %q: unknown protocol (want http, https, grpc, grpcs or h2c)", used, v)
		}
		a.Protocol = strings.ToLower(v)
	}
	if v, used, ok, err = annotation(ann, AnnotationAppHealthCheck); err != nil {
		return a, err
	} else if ok {
		if a.HealthCheck, err = strconv.ParseBool(v); err != nil {
			return a, fmt.Errorf("annotation %s %q: want true or false", used, v)
		}
	}
	if v, used, ok, err = annotation(ann, AnnotationAppHealthPath); err != nil {
		return a, err
	} else if ok {
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n\x00?#") {
			return a, fmt.Errorf("annotation %s %q: want an absolute path without query", used, v)
		}
		a.HealthPath = v
	}
	if a.HealthPeriod, err = duration(ann, AnnotationAppHealthPeriod, time.Second); err != nil {
		return a, err
	}
	if a.HealthTimeout, err = duration(ann, AnnotationAppHealthTime, time.Millisecond); err != nil {
		return a, err
	}
	if v, used, ok, err = annotation(ann, AnnotationAppHealthThresh); err != nil {
		return a, err
	} else if ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return a, fmt.Errorf("annotation %s %q: want a whole number 1-1000", used, v)
		}
		a.HealthThresh = n
	}
	if v, used, ok, err = annotation(ann, AnnotationLogLevel); err != nil {
		return a, err
	} else if ok {
		switch strings.ToLower(v) {
		case "debug", "info", "warn", "error":
			a.LogLevel = strings.ToLower(v)
		default:
			return a, fmt.Errorf("annotation %s %q: want debug, info, warn or error", used, v)
		}
	}
	if v, ok := ann[AnnotationTransparent]; ok {
		if a.Transparent, err = strconv.ParseBool(strings.TrimSpace(v)); err != nil {
			return a, fmt.Errorf("annotation %s %q: want true or false", AnnotationTransparent, v)
		}
	}
	return a, nil
}

// duration reads a probe duration: a Go duration ("5s"), or a plain
// integer in Dapr's unit for that annotation (seconds for the interval,
// milliseconds for the timeout). At most an hour, more than zero.
func duration(ann map[string]string, name string, daprUnit time.Duration) (time.Duration, error) {
	v, used, ok, err := annotation(ann, name)
	if err != nil || !ok {
		return 0, err
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 || n > int(time.Hour/daprUnit) {
			return 0, fmt.Errorf("annotation %s %q: want more than 0 and at most 1h", used, v)
		}
		d = time.Duration(n) * daprUnit
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, fmt.Errorf("annotation %s %q: want a duration (5s, 500ms) or a whole number of %s", used, v, unitName(daprUnit))
	}
	if d <= 0 || d > time.Hour {
		return 0, fmt.Errorf("annotation %s %q: want more than 0 and at most 1h", used, v)
	}
	return d, nil
}

func unitName(d time.Duration) string {
	if d == time.Second {
		return "seconds"
	}
	return "milliseconds"
}
