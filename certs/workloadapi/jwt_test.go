package workloadapi

import "github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

func jwtParams() jwtsvid.Params { return jwtsvid.Params{Audience: "a"} }
