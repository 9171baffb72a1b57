package mesh.authz_test

import data.mesh.authz

frontend := {"namespace": "default", "app_id": "frontend", "trust_domain": "cluster.local"}

test_frontend_reads_orders if {
	authz.allow with input as {"source": frontend, "destination": {"app_id": "orders"}, "request": {"method": "GET", "path": "/orders/1"}}
}

test_frontend_cannot_put if {
	not authz.allow with input as {"source": frontend, "destination": {"app_id": "orders"}, "request": {"method": "PUT", "path": "/orders/1"}}
}

test_delete_denied if {
	count(authz.deny) == 1 with input as {"source": frontend, "destination": {"app_id": "orders"}, "request": {"method": "DELETE", "path": "/orders/1"}}
}

# _mesh rules are part of a namespace's decision, in tests as in the sidecar.
test_mesh_wide_admin_deny_applies if {
	"admin routes are closed mesh-wide" in authz.deny with input as {"source": frontend, "destination": {"app_id": "orders"}, "request": {"method": "GET", "path": "/Admin/users"}}
}
