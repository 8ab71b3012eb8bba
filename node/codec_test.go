package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// rawCodec sends a request's bytes as they are (a client of another language can send strings
// that Go's protobuf would refuse to encode) and decodes answers as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
func (rawCodec) Name() string { return "proto" }

// withBadByte encodes m and turns the last byte of its one occurrence of mark into 0xff.
func withBadByte(t *testing.T, m proto.Message, mark string) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(b, []byte(mark)); i < 0 || bytes.Count(b, []byte(mark)) != 1 {
		t.Fatalf("%q is not once in the encoding", mark)
	} else {
		b[i+len(mark)-1] = 0xff
	}
	return b
}

// TestInvalidUTF8Refused: a request with a string that is not UTF-8, which gRPC fails to decode
// (answering INTERNAL, as if the server had failed), is refused with INVALID_ARGUMENT naming the
// field, unary or as an item of the append stream (whose other items run), nested fields
// included, and writes nothing.
func TestInvalidUTF8Refused(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	conn := dial(t, n.Addr())
	c := shoalv1.NewStreamsClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	check := func(what string, err error, field string) {
		t.Helper()
		st := status.Convert(err)
		got := invalidField(st)
		if st.Code() != codes.InvalidArgument || got == nil || got.Field != field || got.Limit != "valid UTF-8" {
			t.Fatalf("%s: %v (details %v), want InvalidArgument naming %s", what, err, st.Details(), field)
		}
	}
	// Unary, a top-level field and a nested one.
	for _, tc := range []struct {
		req         *shoalv1.AppendRequest
		mark, field string
	}{
		{&shoalv1.AppendRequest{Stream: "utf8-aX", Events: events("Opened")}, "utf8-aX", "stream"},
		{&shoalv1.AppendRequest{Stream: "utf8-b", Events: events("Opened", "PaidX")}, "PaidX", "events[1].type"},
	} {
		var resp shoalv1.AppendResponse
		err := conn.Invoke(ctx, shoalv1.Streams_Append_FullMethodName, withBadByte(t, tc.req, tc.mark), &resp, grpc.ForceCodecV2(rawCodec{}))
		check("append with "+tc.field+" not UTF-8", err, tc.field)
	}
	// On the append stream: the item is refused, the batch's other items run, and the stream
	// goes on.
	pipe, err := conn.NewStream(ctx, &shoalv1.Streams_ServiceDesc.Streams[2], shoalv1.Streams_AppendPipeline_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	item := func(id uint64, stream string, types ...string) *shoalv1.AppendItem {
		return &shoalv1.AppendItem{Id: id, TimeoutMs: 10_000, Request: &shoalv1.AppendRequest{Stream: stream, Events: events(types...)}}
	}
	answers := func(want int) map[uint64]*shoalv1.AppendItemResult {
		t.Helper()
		got := map[uint64]*shoalv1.AppendItemResult{}
		for len(got) < want {
			var results shoalv1.AppendResults
			if err := pipe.RecvMsg(&results); err != nil {
				t.Fatalf("append stream, %d of %d answers: %v", len(got), want, err)
			}
			for _, r := range results.Results {
				got[r.Id] = r
			}
		}
		return got
	}
	batch := &shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{
		item(1, "utf8-ok1", "Opened"), item(2, "utf8-cX", "Opened"), item(3, "utf8-ok2", "Opened"), item(4, "utf8-f", "Opened", "PaidX"),
	}, Cancel: []uint64{99}}
	b := withBadByte(t, batch, "utf8-cX")
	b[bytes.Index(b, []byte("PaidX"))+4] = 0xff
	if err := pipe.SendMsg(b); err != nil {
		t.Fatal(err)
	}
	got := answers(4)
	check("append stream item with items[1].request.stream not UTF-8", got[2].GetError().Err(), "items[1].request.stream")
	check("append stream item with items[3].request.events[1].type not UTF-8", got[4].GetError().Err(), "items[3].request.events[1].type")
	for _, id := range []uint64{1, 3} {
		if got[id].GetError() != nil || got[id].GetResponse() == nil {
			t.Fatalf("item %d of the batch with two refused: %v", id, got[id])
		}
	}
	if b, err := proto.Marshal(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{item(5, "utf8-ok3", "Opened")}}); err != nil {
		t.Fatal(err)
	} else if err := pipe.SendMsg(b); err != nil {
		t.Fatal(err)
	}
	if r := answers(1)[5]; r.GetError() != nil || r.GetResponse() == nil {
		t.Fatalf("the next batch on the stream: %v", r)
	}

	// Nothing was written, and the node serves on.
	for _, stream := range []string{"utf8-a", "utf8-b", "utf8-c", "utf8-e", "utf8-f"} {
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: stream, Events: events("Opened"),
			Expected: &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_NO_STREAM}}); err != nil {
			t.Fatalf("append to %s, which must not exist: %v", stream, err)
		}
	}
	var resp shoalv1.AppendResponse
	// Two messages on a unary call, the first not UTF-8: gRPC refuses the call itself, and the
	// refusal left in the message goes with it.
	two, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, shoalv1.Streams_Append_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	bad := withBadByte(t, &shoalv1.AppendRequest{Stream: "utf8-eX", Events: events("Opened")}, "utf8-eX")
	if err := two.SendMsg(bad); err != nil {
		t.Fatal(err)
	}
	two.SendMsg(bad)
	two.CloseSend()
	if err := two.RecvMsg(&resp); status.Code(err) == codes.OK {
		t.Fatalf("two messages on a unary call: %v", err)
	}
	// A request cannot forge a refusal: the mark's field without this process's nonce is an
	// unknown field like any other.
	forged := &shoalv1.AppendRequest{Stream: "utf8-d", Events: events("Opened")}
	mark := protowire.AppendTag(nil, refusalField, protowire.BytesType)
	forged.ProtoReflect().SetUnknown(protowire.AppendBytes(mark, []byte("0123456789abcdefstream\x00invalid")))
	if _, err := c.Append(ctx, forged); err != nil {
		t.Fatalf("append with an unknown field like a refusal's: %v", err)
	}
	// A message that is malformed otherwise is gRPC's to refuse, as before.
	err = conn.Invoke(ctx, shoalv1.Streams_Append_FullMethodName, []byte{0x0a, 0x7f}, &resp, grpc.ForceCodecV2(rawCodec{}))
	if status.Code(err) != codes.Internal {
		t.Fatalf("a truncated message: %v, want gRPC's INTERNAL", err)
	}
}

// TestServerCodecBuffers: a message is encoded into a buffer of the next power of two at most
// (gRPC's pool took 1 MiB for anything from 32 KiB on), and decodes back as it was.
func TestServerCodecBuffers(t *testing.T) {
	c := newServerCodec()
	for _, size := range []int{100, 40 << 10, 200 << 10, 600 << 10, 3 << 20} {
		page := &shoalv1.ReadResponse{Events: []*shoalv1.RecordedEvent{{Stream: "s", Type: "T", Data: bytes.Repeat([]byte{7}, size)}}}
		data, err := c.Marshal(page)
		if err != nil {
			t.Fatal(err)
		}
		enc := proto.Size(page)
		if got := data.Len(); got != enc {
			t.Fatalf("%d bytes of data: %d bytes encoded, want %d", size, got, enc)
		}
		if b := data[0].ReadOnlyData(); len(data) != 1 || cap(b) > max(2*enc, 256) {
			t.Fatalf("%d bytes of data (%d encoded) in a buffer of %d", size, enc, cap(b))
		}
		var back shoalv1.ReadResponse
		if err := c.Unmarshal(data, &back); err != nil || !proto.Equal(&back, page) {
			t.Fatalf("%d bytes of data: decoded %v, %v", size, err, proto.Equal(&back, page))
		}
		data.Free()
	}
}

// FuzzServerCodecAppendBatch: whatever bytes an append stream's batch arrives as, serverCodec
// decodes them as protobuf does when protobuf can; otherwise it fails, or refuses the whole
// batch, or refuses items that then carry no request, while the other items decode as
// protobuf decodes them alone. It never panics.
func FuzzServerCodecAppendBatch(f *testing.F) {
	good := &shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{
		{Id: 1, Request: &shoalv1.AppendRequest{Stream: "a", Events: events("Opened")}},
		{Id: 2, TimeoutMs: 5, Request: &shoalv1.AppendRequest{Stream: "bX", Events: events("Paid")}},
	}, Cancel: []uint64{7}}
	b, err := proto.Marshal(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	bad := bytes.Clone(b)
	bad[bytes.Index(bad, []byte("bX"))+1] = 0xff
	f.Add(bad)
	f.Add([]byte{0x0a, 0x03, 0x08, 0x01, 0x12})
	c := newServerCodec()
	f.Fuzz(func(t *testing.T, data []byte) {
		var got shoalv1.AppendBatch
		err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &got)
		var want shoalv1.AppendBatch
		if proto.Unmarshal(data, &want) == nil {
			if err != nil || !proto.Equal(&got, &want) {
				t.Fatalf("decodes as %v (%v), protobuf as %v", &got, err, &want)
			}
			return
		}
		if err != nil || refusedUTF8(&got) != nil {
			return
		}
		for i, it := range got.Items {
			if refusedUTF8(it) != nil {
				if it.Request != nil {
					t.Fatalf("item %d refused, with a request: %v", i, it)
				}
				continue
			}
			b, err := proto.Marshal(it)
			if err != nil {
				t.Fatalf("item %d decoded, but does not encode: %v", i, err)
			}
			var again shoalv1.AppendItem
			if err := proto.Unmarshal(b, &again); err != nil || !proto.Equal(it, &again) {
				t.Fatalf("item %d: %v", i, err)
			}
		}
	})
}
