package proxy

import (
	"net/http"
	"testing"

	"github.com/meshd/meshd/proxy/resiliency"
)

// benchPolicy names a retry, a timeout and a breaker for "orders" and
// nothing for "stock".
const benchPolicy = `apiVersion: dapr.io/v1alpha1
kind: Resiliency
spec:
  policies:
    timeouts: {general: 5s}
    retries:
      r: {policy: exponential, maxRetries: 3, matching: {httpStatusCodes: "503"}}
    circuitBreakers:
      cb: {trip: consecutiveFailures > 5}
  targets:
    apps:
      orders: {timeout: general, retry: r, circuitBreaker: cb}
      inventory: {retry: r, circuitBreaker: cb}
`

// BenchmarkInvokeResiliency is BenchmarkInvoke with a Resiliency config:
// "timeout+retry+breaker" calls a target with all three policies,
// "retry+breaker" one without a deadline, "no-policy" a target the config
// does not name.
func BenchmarkInvokeResiliency(b *testing.B) {
	spec, err := resiliency.Parse("bench.yaml", []byte(benchPolicy))
	if err != nil {
		b.Fatal(err)
	}
	ca := newCA(b, "cluster.local")
	res := newResolver()
	ch := benchApp(b)
	callee := startSidecar(b, ca, Config{Identity: mustIdentity(b, "orders"), Resolver: res, App: ch})
	stock := startSidecar(b, ca, Config{Identity: mustIdentity(b, "stock"), Resolver: res, App: ch})
	inventory := startSidecar(b, ca, Config{Identity: mustIdentity(b, "inventory"), Resolver: res, App: ch})
	caller := startSidecar(b, ca, Config{Identity: mustIdentity(b, "frontend"), Resolver: res})
	caller.p.SetResiliency(resiliency.New(spec))
	res.set("orders", callee.internal)
	res.set("stock", stock.internal)
	res.set("inventory", inventory.internal)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, bc := range []struct{ name, app string }{{"timeout+retry+breaker", "orders"}, {"retry+breaker", "inventory"}, {"no-policy", "stock"}} {
		b.Run(bc.name, func(b *testing.B) {
			benchGET(b, client, caller.httpURL+"/v1.0/invoke/"+bc.app+"/method/api/orders/42?x=1")
		})
	}
}
