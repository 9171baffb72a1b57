package mesh.authz_test

import data.mesh.authz

test_admin_denied if {
	"admin routes are closed mesh-wide" in authz.deny with input as {
		"source": {"trust_domain": "cluster.local"},
		"request": {"path": "/Admin/users"},
	}
}

test_foreign_denied if {
	"caller from a foreign trust domain" in authz.deny with input as {
		"source": {"trust_domain": "evil.example"},
		"request": {"path": "/x"},
	}
}
