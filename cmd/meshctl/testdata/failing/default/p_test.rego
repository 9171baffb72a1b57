package mesh.authz_test

import data.mesh.authz

test_get_allowed if {
	authz.allow with input as {"request": {"method": "GET"}}
}

test_wrongly_expects_post if {
	authz.allow with input as {"request": {"method": "POST"}}
}
