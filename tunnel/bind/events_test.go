package bind

import (
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// testBind lends its transports to tests of endpoints without a Bind.
var testBind = New(key.Key{}, link.Discard)
