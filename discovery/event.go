package discovery

import "time"

// EventKind says what changed in the Cache.
type EventKind uint8

// Kinds of Event.
const (
	// EventUpdated: the endpoint set of Target was set or changed.
	EventUpdated EventKind = iota + 1
	// EventRemoved: Target was forgotten.
	EventRemoved
	// EventEjected: Addr left the picker for EjectedFor after a failure.
	EventEjected
	// EventReturned: the ejection time of Addr is up; it is back in the picker.
	EventReturned
	// EventHealthChanged: a backend marked Addr healthy or unhealthy.
	EventHealthChanged
	// EventError: a backend reported an error (Err); the state is unchanged.
	EventError
)

var eventKindNames = [...]string{
	EventUpdated:       "updated",
	EventRemoved:       "removed",
	EventEjected:       "ejected",
	EventReturned:      "returned",
	EventHealthChanged: "health",
	EventError:         "error",
}

func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return "unknown"
}

// Event is one change of the Cache, as seen by subscribers.
type Event struct {
	Kind   EventKind
	Target Target // zero for EventError
	// Addr is the endpoint concerned (EventEjected, EventReturned,
	// EventHealthChanged).
	Addr string
	// Healthy is the new health (EventHealthChanged).
	Healthy bool
	// EjectedFor is how long Addr is out (EventEjected).
	EjectedFor time.Duration
	// Ready is how many endpoints the target's picker holds after the
	// change; Total is how many endpoints the target has.
	Ready, Total int
	// Err is the backend's error (EventError).
	Err error
}
