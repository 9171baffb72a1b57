package consul

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string // "" = valid
		check   func(t *testing.T, c *Config)
	}{
		{"empty is the defaults", "", "", func(t *testing.T, c *Config) {
			if c.DaprPortMetaKey != "DAPR_PORT" || c.SelfRegister || c.selfDeregister() {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{"dapr fields", `
client:
  address: 127.0.0.1:8500
  scheme: http
  datacenter: dc1
  token: secret
queryOptions:
  useCache: true
  filter: 'Service.Tags contains "x"'
  waitTime: 10s
checks:
  - name: health
    checkID: h:${APP_ID}
    interval: 1s
    http: http://${HOST_ADDRESS}:${DAPR_HTTP_PORT}/v1.0/healthz/app
tags: [meshd, "${NAMESPACE}"]
meta:
  team: pay
daprPortMetaKey: MY_PORT
selfRegister: true
useCache: true
`, "", func(t *testing.T, c *Config) {
			if c.Client.Address != "127.0.0.1:8500" || c.Client.Datacenter != "dc1" || c.DaprPortMetaKey != "MY_PORT" {
				t.Fatalf("client: %+v", c.Client)
			}
			if !c.SelfRegister || !c.selfDeregister() {
				t.Fatal("selfDeregister must follow selfRegister when unset")
			}
			q, wait := c.queryOptions()
			if !q.UseCache || wait != 10*time.Second || q.Filter == "" {
				t.Fatalf("query options %+v wait %v", q, wait)
			}
			if c.Checks[0].Interval != Duration(time.Second) {
				t.Fatalf("interval %v", c.Checks[0].Interval)
			}
		}},
		{"selfDeregister false kept", "selfRegister: true\nselfDeregister: false\n", "", func(t *testing.T, c *Config) {
			if c.selfDeregister() {
				t.Fatal("selfDeregister: false ignored")
			}
		}},
		{"trailing empty document", "selfRegister: true\n---\n", "", nil},
		{"unknown field", "selfregister: true\n", "field selfregister not found", nil},
		{"unknown client field", "client:\n  adress: x:1\n", "field adress not found", nil},
		{"duplicate key", "tags: [a]\ntags: [b]\n", "already defined", nil},
		{"two documents", "tags: [a]\n---\ntags: [b]\n", "more than one YAML document", nil},
		{"not a mapping", "- a\n", "cannot unmarshal", nil},
		{"advancedRegistration", "advancedRegistration:\n  name: x\n", "advancedRegistration is not supported", nil},
		{"bad address", "client:\n  address: nohostport\n", "client.address", nil},
		{"bad scheme", "client:\n  scheme: ftp\n", "client.scheme", nil},
		{"httpAuth without user", "client:\n  httpAuth:\n    password: x\n", "username is empty", nil},
		{"bad duration", "queryOptions:\n  waitTime: soon\n", "is not a duration", nil},
		{"negative duration", "queryOptions:\n  waitTime: -1s\n", "negative duration", nil},
		{"bad meta key", "meta:\n  \"a b\": x\n", "meta key", nil},
		{"consul- meta key", "meta:\n  consul-x: y\n", "meta key", nil},
		{"meta collides with port key", "meta:\n  DAPR_PORT: \"1\"\n", "set by meshd", nil},
		{"meta collides with namespace key", "meta:\n  namespace: x\n", "set by meshd", nil},
		{"bad port meta key", "daprPortMetaKey: \"a/b\"\n", "daprPortMetaKey", nil},
		{"port key is namespace key", "daprPortMetaKey: namespace\n", "namespace key", nil},
		{"empty tag", "tags: [\"\"]\n", "tags[0]: empty", nil},
		{"unknown placeholder", "tags: [\"${SECRET}\"]\n", "unknown placeholder ${SECRET}", nil},
		{"unterminated placeholder", "meta:\n  a: \"${APP_ID\"\n", "unterminated", nil},
		{"check without kind", "checks:\n  - name: x\n    interval: 1s\n", "exactly one of", nil},
		{"check with two kinds", "checks:\n  - http: http://a:1/\n    tcp: a:1\n    interval: 1s\n", "exactly one of", nil},
		{"check without interval", "checks:\n  - http: http://a:1/\n", "interval is required", nil},
		{"ttl check needs no interval", "checks:\n  - ttl: 10s\n", "", nil},
		{"bad status", "checks:\n  - ttl: 10s\n    status: fine\n", "status \"fine\"", nil},
		{"watch defaults", "", "", func(t *testing.T, c *Config) {
			if c.watchIdleTimeout() != DefaultWatchIdleTimeout || c.maxWatches() != DefaultMaxWatches {
				t.Fatalf("watchIdleTimeout %v maxWatches %d", c.watchIdleTimeout(), c.maxWatches())
			}
		}},
		{"watch settings", "watchIdleTimeout: 90s\nmaxWatches: 4096\n", "", func(t *testing.T, c *Config) {
			if c.watchIdleTimeout() != 90*time.Second || c.maxWatches() != 4096 {
				t.Fatalf("watchIdleTimeout %v maxWatches %d", c.watchIdleTimeout(), c.maxWatches())
			}
		}},
		{"watchIdleTimeout too short", "watchIdleTimeout: 500ms\n", "at least 1s", nil},
		{"watchIdleTimeout negative", "watchIdleTimeout: -1m\n", "negative duration", nil},
		{"maxWatches negative", "maxWatches: -1\n", "maxWatches -1: want 1 to 4096", nil},
		{"maxWatches too large", "maxWatches: 5000\n", "maxWatches 5000", nil},
		{"maxWatches not a number", "maxWatches: many\n", "cannot unmarshal", nil},
		{"duplicate check id", "checks:\n  - ttl: 10s\n    checkID: a\n  - ttl: 10s\n    checkID: a\n", "used twice", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "consul: config: ") {
					t.Fatalf("error %q, want it to contain %q (with the package prefix)", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestRegistration(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, c *Config)
	}{
		{"default check on the health URL", "selfRegister: true\ntags: [\"${APP_ID}\"]\nmeta:\n  http: \"${DAPR_HTTP_PORT}\"\n", func(t *testing.T, c *Config) {
			reg, err := c.registration("orders", "prod", "127.0.0.1:50002", "http://127.0.0.1:3500/v1.0/healthz/app")
			if err != nil {
				t.Fatal(err)
			}
			if reg.Name != "orders" || reg.Address != "127.0.0.1" || reg.Port != 50002 || reg.ID != "meshd-orders-prod-127.0.0.1-50002" {
				t.Fatalf("registration %+v", reg)
			}
			if reg.Meta["DAPR_PORT"] != "50002" || reg.Meta["namespace"] != "prod" || reg.Meta["http"] != "3500" {
				t.Fatalf("meta %v", reg.Meta)
			}
			if len(reg.Tags) != 1 || reg.Tags[0] != "orders" {
				t.Fatalf("tags %v", reg.Tags)
			}
			if len(reg.Checks) != 1 || reg.Checks[0].HTTP != "http://127.0.0.1:3500/v1.0/healthz/app" ||
				reg.Checks[0].Interval != "1s" || reg.Checks[0].DeregisterCriticalServiceAfter != "1m0s" {
				t.Fatalf("checks %+v", reg.Checks[0])
			}
		}},
		{"own checks replace the default; port key honoured", "selfRegister: true\ndaprPortMetaKey: P\nchecks:\n  - tcp: \"${HOST_ADDRESS}:${DAPR_INTERNAL_PORT}\"\n    interval: 2s\n", func(t *testing.T, c *Config) {
			reg, err := c.registration("orders", "default", "[::1]:7000", "http://127.0.0.1:3500/v1.0/healthz/app")
			if err != nil {
				t.Fatal(err)
			}
			if reg.Meta["P"] != "7000" || reg.Meta["DAPR_PORT"] != "" {
				t.Fatalf("meta %v", reg.Meta)
			}
			if len(reg.Checks) != 1 || reg.Checks[0].TCP != "::1:7000" || reg.Checks[0].Interval != "2s" {
				t.Fatalf("checks %+v", reg.Checks[0])
			}
			if reg.ID != "meshd-orders-default---1-7000" {
				t.Fatalf("ID %q", reg.ID)
			}
		}},
		{"bad local address", "selfRegister: true\n", func(t *testing.T, c *Config) {
			if _, err := c.registration("orders", "default", "nohost", ""); err == nil {
				t.Fatal("no error for a bad local address")
			}
			if _, err := c.registration("orders", "default", "h:0", ""); err == nil {
				t.Fatal("no error for port 0")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "selfRegister: true\n", "client:\n  address: 127.0.0.1:8500\n",
		"checks:\n  - http: http://${HOST_ADDRESS}:1/\n    interval: 1s\n",
		"meta:\n  a: \"${APP_ID\"\n", "tags: [a, b]\n---\n", "queryOptions:\n  waitTime: 1s\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "consul: config: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		if c.DaprPortMetaKey == "" {
			t.Fatal("valid config without a port key")
		}
		// A valid config always yields a registration for a valid instance.
		reg, err := c.registration("app", "default", "127.0.0.1:1", "http://127.0.0.1:2/v1.0/healthz/app")
		if err != nil {
			t.Fatal(err)
		}
		if reg.Meta[c.DaprPortMetaKey] != "1" || reg.Meta[NamespaceMetaKey] != "default" {
			t.Fatalf("meshd's meta overwritten: %v", reg.Meta)
		}
	})
}
