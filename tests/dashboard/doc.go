// Package dashboard tests `meshctl dashboard` in a real headless Chromium
// (Debian's chromium, driven with chromedp; install-chromium.sh installs
// it, `make chromium` runs that): with traffic flowing between two apps of
// `meshctl run`, the page shows the edge between them with its rate,
// updates without a reload, and lists a denial with its reason. The mesh,
// the dashboard and the browser all run inside a network namespace the
// test creates (tests/netnstest): mDNS stays off the real network and the
// browser can reach nothing but loopback.
package dashboard
