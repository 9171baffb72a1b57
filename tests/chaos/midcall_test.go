package chaos

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoopbackAppKilledMidCall (#18: "a GET whose callee's app died
// mid-call gets the callee's 502 and it is not retried"): GETs and POSTs,
// over HTTP/1.1 and HTTP/2, are in flight in both instances' apps (each
// app holds them 3 s) when one app is killed (kill -9). Its sidecar answers
// 502 marked Meshd-App-Failed; the caller sends each GET on to the other
// instance (200), and answers each POST the dead app had with that 502,
// never sending it twice.
func TestLoopbackAppKilledMidCall(t *testing.T) {
	m := startLoopMesh(t, 2)
	cs := (&Load{H2C: true, Timeout: 30 * time.Second}).clients()
	type res struct {
		id, method string
		status     int
		marked     bool
		instance   string
	}
	const perKind = 8
	results := make([]res, 2*perKind)
	var wg sync.WaitGroup
	for i := range results {
		method := http.MethodGet
		if (i/2)%2 == 1 { // GET GET POST POST ...: each kind on both instances
			method = http.MethodPost
		}
		id := "midcall-" + strconv.Itoa(i)
		results[i] = res{id: id, method: method}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(method, m.caller.HTTPURL()+"/v1.0/invoke/echo/method/sleep?d=3s", strings.NewReader(`{"n":1}`))
			req.Header.Set("Chaos-Id", id)
			resp, err := cs[(i/4)%2].Do(req) // HTTP/1.1 and HTTP/2 callers
			if err != nil {
				t.Errorf("%s %s: %v", method, id, err)
				return
			}
			defer resp.Body.Close()
			results[i].status = resp.StatusCode
			results[i].marked = resp.Header.Get("Meshd-App-Failed") != ""
			var v struct {
				Name string `json:"name"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&v)
			results[i].instance = v.Name
		}()
		time.Sleep(10 * time.Millisecond) // alternate the round robin between the two
	}
	time.Sleep(time.Second)
	m.inst[0].app.Kill()
	wg.Wait()
	rec, err := ReadRecord(m.records()...)
	if err != nil {
		t.Fatal(err)
	}
	var getsOnDead, postsOnDead int
	for _, r := range results {
		deliveries := rec[r.id]
		onDead := len(deliveries) > 0 && strings.HasSuffix(deliveries[0], " "+m.inst[0].name)
		switch r.method {
		case http.MethodGet:
			if onDead {
				getsOnDead++
			}
			if r.status != 200 || r.instance != m.inst[1].name {
				t.Errorf("GET %s (delivered %v): %d from %q; want 200 from %s", r.id, deliveries, r.status, r.instance, m.inst[1].name)
			}
		default:
			if len(deliveries) != 1 {
				t.Errorf("POST %s delivered %d times (%v); want once", r.id, len(deliveries), deliveries)
			}
			if onDead {
				postsOnDead++
				if r.status != 502 || !r.marked {
					t.Errorf("POST %s on the killed app: %d, marked %v; want 502 with Meshd-App-Failed", r.id, r.status, r.marked)
				}
			} else if r.status != 200 {
				t.Errorf("POST %s on the live app: %d; want 200", r.id, r.status)
			}
		}
	}
	t.Logf("in flight on the killed app when it died: %d GETs, %d POSTs", getsOnDead, postsOnDead)
	if getsOnDead == 0 || postsOnDead == 0 {
		t.Fatalf("the killed app had %d GETs and %d POSTs in flight; want some of each (the test proves nothing)", getsOnDead, postsOnDead)
	}
}
