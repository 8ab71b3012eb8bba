package saga

import (
	"encoding/binary"

	"github.com/google/uuid"
)

// Kind distinguishes a step's action from its compensation in idempotency
// IDs. Values are stable (append-only): changing one changes every ID.
type Kind uint8

const (
	KindAction       Kind = 1
	KindCompensation Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindAction:
		return "action"
	case KindCompensation:
		return "compensation"
	}
	return "kind?"
}

// idSpace is the UUID v5 namespace of saga idempotency IDs.
var idSpace = uuid.MustParse("0c6b1f5e-7a52-4c1e-8d3f-5361676100a1")

// IdempotencyID returns the deterministic ID of one step's action or
// compensation in one saga: UUID v5 (SHA-1) over
//
//	uvarint len(sagaID) | sagaID | step (4 BE) | kind (1)
//
// It is the same on every attempt and after every Resume, so a step that
// passes it on (as an event ID, a payment idempotency key, a request ID)
// takes effect once however often it is re-run. It is IdempotencyIDAt with
// start version 0: the IDs of a saga whose ID was never used before.
func IdempotencyID(sagaID string, step int, kind Kind) uuid.UUID {
	return IdempotencyIDAt(sagaID, 0, step, kind)
}

// IdempotencyIDAt is the idempotency ID of a step of the saga whose
// SagaStarted event is at version started (State.StartVersion). An ID reused
// after its saga's stream was soft-deleted starts a new saga at a later
// version, and its steps get IDs of their own, not the first saga's (which
// idempotent systems would take for repeats, and do nothing): started, when
// not 0, is hashed in too, after the kind (8 BE).
func IdempotencyIDAt(sagaID string, started uint64, step int, kind Kind) uuid.UUID {
	b := binary.AppendUvarint(nil, uint64(len(sagaID)))
	b = append(b, sagaID...)
	b = binary.BigEndian.AppendUint32(b, uint32(step))
	b = append(b, byte(kind))
	if started != 0 {
		b = binary.BigEndian.AppendUint64(b, started)
	}
	return uuid.NewSHA1(idSpace, b)
}
