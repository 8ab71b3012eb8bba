package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// serverCodec is the node's gRPC codec: gRPC's proto codec, but for two things.
//
// Messages it sends are encoded into buffers of a pool with a tier at every power of two from
// 2 KiB to 1 MiB (sendPool). gRPC's default pool jumps from 32 KiB to 1 MiB, so that every
// page of a read above 32 KiB took a buffer of 1 MiB; a read or subscription whose caller
// stops taking pages holds two encoded pages (and the next page itself: docs/operations.md,
// "What clients can make a node hold").
//
// A request whose protobuf strings are not all valid UTF-8 (a non-Go client that sends raw
// bytes as a stream name, say) fails to decode before any of shoal's code sees it, and gRPC
// answers such a failure with INTERNAL, which says the server failed and leaves a careful
// client unsure whether the request was applied. serverCodec and the interceptors below turn it
// into the INVALID_ARGUMENT, naming the field, that every other bad input gets
// (docs/guarantees.md, "Bad input"):
//
//   - serverCodec decodes as gRPC's proto codec does. When the only trouble is a string's UTF-8,
//     it finds the field, clears the message, leaves the refusal in the message itself (an
//     unknown field no client can forge: refusalMark) and reports success, since gRPC would
//     turn an error into INTERNAL.
//   - refuseBadUTF8Unary and refuseBadUTF8Stream, the first interceptors of the node's server
//     (every service of it, the raft transport's too), find the refusal in the request they
//     are handed, or that RecvMsg filled, and answer with it: the request runs no further.
//
// A request is never run with the message cleared: every decode that reaches a handler goes
// through an interceptor. The refusal lives and dies with its message, so a decode that gRPC
// then fails itself (a second message on a unary call) leaves nothing behind.
type serverCodec struct{ encoding.CodecV2 }

// newServerCodec wraps gRPC's registered proto codec.
func newServerCodec() serverCodec { return serverCodec{encoding.GetCodecV2(proto.Name)} }

// sendPool holds the buffers serverCodec encodes into: one tier per power of two from 2 KiB
// to 1 MiB, so a message takes less than twice its size (messages under gRPC's pooling
// threshold, 1 KiB, take a buffer of their own, and so do those over 1 MiB).
var sendPool = func() mem.BufferPool {
	p, err := mem.NewBinaryTieredBufferPool(11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
	if err != nil {
		panic(err)
	}
	return p
}()

func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return c.CodecV2.Marshal(v)
	}
	size := protov2.Size(m)
	opts := protov2.MarshalOptions{UseCachedSize: true} // the size was just computed
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := sendPool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		sendPool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, sendPool)}, nil
}

// refusalMark is the unknown field serverCodec leaves in a message it cleared: field number
// refusalField, holding refusalNonce, the field's path, a NUL and the reason. The nonce is
// random per process, so that no request can carry a mark of its own.
const refusalField protowire.Number = protowire.MaxValidNumber

var refusalNonce = func() (b [16]byte) {
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return b
}()

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		return err
	}
	m := messageOf(v)
	if m == nil {
		return err
	}
	b := data.Materialize()
	if batch, ok := m.(*shoalv1.AppendBatch); ok && unmarshalItems(b, batch) {
		return nil
	}
	field, reason := invalidUTF8(b, m.ProtoReflect().Descriptor())
	if field == "" {
		return err // not a string field's, as far as the bytes tell: gRPC's error stands
	}
	setRefusal(m, field, reason)
	return nil
}

// unmarshalItems decodes the append stream's batch b into batch item by item, where decoding it
// whole failed on a string's UTF-8: an item whose strings are not all valid UTF-8 keeps only
// its ID and the refusal (naming "items[i]." and the field), which the pipeline answers as that
// item's, so that the batch's other items run and the stream goes on. false, batch reset, when
// b is malformed otherwise (gRPC's error stands, or the whole batch's refusal).
func unmarshalItems(b []byte, batch *shoalv1.AppendBatch) (ok bool) {
	protov2.Reset(batch)
	defer func() {
		if !ok {
			protov2.Reset(batch)
		}
	}()
	items := batch.ProtoReflect().Descriptor().Fields().ByName("items").Number()
	var rest []byte // the batch's other fields, decoded as they are
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		field := b[:n]
		b = b[n:]
		if num != items || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			rest = append(append(rest, field...), b[:n]...)
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		it := new(shoalv1.AppendItem)
		if err := protov2.Unmarshal(v, it); err != nil {
			path, reason := invalidUTF8(v, it.ProtoReflect().Descriptor())
			id, ok := itemID(v)
			if path == "" || !ok {
				return false
			}
			setRefusal(it, fmt.Sprintf("items[%d].%s", len(batch.Items), path), reason)
			it.Id = id
		}
		batch.Items = append(batch.Items, it)
	}
	return protov2.UnmarshalOptions{Merge: true}.Unmarshal(rest, batch) == nil
}

// itemID reads the ID of the encoded AppendItem b (the last one, as protobuf decodes a scalar
// field sent twice; 0 when none was sent). false when b is malformed.
func itemID(b []byte) (uint64, bool) {
	num := (&shoalv1.AppendItem{}).ProtoReflect().Descriptor().Fields().ByName("id").Number()
	var id uint64
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, false
		}
		b = b[l:]
		if n == num && typ == protowire.VarintType {
			if id, l = protowire.ConsumeVarint(b); l < 0 {
				return 0, false
			}
		} else if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return 0, false
		}
		b = b[l:]
	}
	return id, true
}

// setRefusal clears m and leaves in it the refusal of field for reason (refusalMark).
func setRefusal(m protov2.Message, field, reason string) {
	protov2.Reset(m)
	mark := protowire.AppendTag(nil, refusalField, protowire.BytesType)
	payload := append(bytes.Clone(refusalNonce[:]), field+"\x00"+reason...)
	m.ProtoReflect().SetUnknown(protowire.AppendBytes(mark, payload))
}

// messageOf is v as the proto codec takes it, nil when it is not a protobuf message.
func messageOf(v any) protov2.Message {
	switch m := v.(type) {
	case protov2.Message:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}

// refusedUTF8 returns the refusal serverCodec left in message v, nil when v decoded as it
// should.
func refusedUTF8(v any) error {
	m := messageOf(v)
	if m == nil {
		return nil
	}
	u := m.ProtoReflect().GetUnknown()
	if len(u) == 0 {
		return nil
	}
	num, typ, n := protowire.ConsumeTag(u)
	if num != refusalField || typ != protowire.BytesType {
		return nil
	}
	b, _ := protowire.ConsumeBytes(u[n:])
	rest, ok := bytes.CutPrefix(b, refusalNonce[:])
	if !ok {
		return nil
	}
	field, reason, _ := strings.Cut(string(rest), "\x00")
	return withDetails(codes.InvalidArgument, fmt.Sprintf("shard: invalid argument: %s: %s (limit: valid UTF-8)", field, reason),
		&shoalv1.InvalidField{Field: field, Limit: "valid UTF-8", Reason: reason})
}

func refuseBadUTF8Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := refusedUTF8(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func refuseBadUTF8Stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, utf8Stream{ss})
}

// utf8Stream answers a received message that serverCodec cleared with its refusal.
type utf8Stream struct{ grpc.ServerStream }

func (s utf8Stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return refusedUTF8(m)
}

// invalidUTF8 finds the first string field of the encoded message b (of descriptor md) that
// is not valid UTF-8, nested messages included: its path as the API names it
// ("events[2].type") and what is wrong with it. "" when there is none or b is malformed.
func invalidUTF8(b []byte, md protoreflect.MessageDescriptor) (field, reason string) {
	seen := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", ""
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return "", ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil {
			continue
		}
		name := string(fd.Name())
		if fd.IsList() {
			name = fmt.Sprintf("%s[%d]", name, seen[num])
		}
		seen[num]++
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			return name, fmt.Sprintf("invalid UTF-8 at byte %d", firstInvalid(v))
		case fd.Message() != nil:
			if sub, reason := invalidUTF8(v, fd.Message()); sub != "" {
				return name + "." + sub, reason
			}
		}
	}
	return "", ""
}

// firstInvalid is the offset of b's first invalid UTF-8 sequence.
func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}
