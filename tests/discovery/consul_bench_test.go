package discovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/consul"
	"github.com/meshd/meshd/tests/harness"
)

// consulBenchSetup starts an agent and a Cache fed by the consul backend.
func consulBenchSetup(b *testing.B) (*api.Client, *discovery.Cache) {
	b.Helper()
	agent := harness.StartConsul(b)
	path := filepath.Join(b.TempDir(), "consul.yaml")
	if err := os.WriteFile(path, []byte("client:\n  address: "+agent.Addr()+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	client, err := api.NewClient(&api.Config{Address: agent.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	cache := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	b.Cleanup(func() { cache.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cache.Build(ctx, consul.Name, discovery.BuildOptions{ConfigFile: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { res.Close() })
	return client, cache
}

func consulRegister(b *testing.B, c *api.Client, id string, port int) {
	b.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: consulApp, Address: "127.0.0.1", Port: port,
		Meta: map[string]string{consul.DefaultDaprPortMetaKey: strconv.Itoa(port), consul.NamespaceMetaKey: "default"}})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConsulPick is the per-call resolution cost with the consul
// backend: a read of the watch-fed Cache (no agent round trip).
func BenchmarkConsulPick(b *testing.B) {
	client, cache := consulBenchSetup(b)
	for i := range 3 {
		consulRegister(b, client, fmt.Sprintf("bench-%d", i), 41000+i)
	}
	if err := cache.WaitTarget(context.Background(), consulTarget); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(cache.Ready(consulTarget)) != 3 {
		if time.Now().After(deadline) {
			b.Fatalf("picker = %v", cache.Ready(consulTarget))
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cache.Pick(consulTarget); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkConsulPropagation measures the time from a registration (and a
// deregistration) in the agent to the picker of a caller: one op is one
// register + one deregister; the metrics are their median and worst times.
func BenchmarkConsulPropagation(b *testing.B) {
	client, cache := consulBenchSetup(b)
	consulRegister(b, client, "bench-base", 41100)
	if err := cache.WaitTarget(context.Background(), consulTarget); err != nil {
		b.Fatal(err)
	}
	changed := make(chan int, 16)
	unsub := cache.Subscribe(func(ev discovery.Event) {
		if ev.Kind == discovery.EventUpdated && ev.Target == consulTarget {
			changed <- ev.Ready
		}
	})
	defer unsub()
	waitReady := func(n int) {
		timeout := time.After(5 * time.Second)
		for {
			select {
			case got := <-changed:
				if got == n {
					return
				}
			case <-timeout:
				b.Fatalf("picker never reached %d endpoints", n)
			}
		}
	}
	for len(cache.Ready(consulTarget)) != 1 {
		time.Sleep(time.Millisecond)
	}
	var reg, dereg []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		consulRegister(b, client, "bench-x", 41200)
		waitReady(2)
		reg = append(reg, time.Since(start))
		start = time.Now()
		if err := client.Agent().ServiceDeregister("bench-x"); err != nil {
			b.Fatal(err)
		}
		waitReady(1)
		dereg = append(dereg, time.Since(start))
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(med(reg), "register-ms-p50")
	b.ReportMetric(float64(reg[len(reg)-1].Microseconds())/1000, "register-ms-max")
	b.ReportMetric(med(dereg), "deregister-ms-p50")
	b.ReportMetric(float64(dereg[len(dereg)-1].Microseconds())/1000, "deregister-ms-max")
}
