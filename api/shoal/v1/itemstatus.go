package shoalv1

import (
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ItemStatusOf returns a failed pipeline item's answer: err as the gRPC
// status that the unary Append would have returned for it (a context error
// becomes Canceled or DeadlineExceeded, as gRPC answers for a unary handler).
// err must not be nil.
func ItemStatusOf(err error) *ItemStatus {
	s, ok := status.FromError(err)
	if !ok {
		s = status.FromContextError(err)
	}
	st := s.Proto()
	if st.Code == int32(codes.OK) { // never report success for an error
		st.Code, st.Message = int32(codes.Internal), err.Error()
	}
	return &ItemStatus{Code: st.Code, Message: st.Message, Details: st.Details}
}

// Err returns the item's failure as the gRPC status error it stands for.
func (x *ItemStatus) Err() error {
	return status.FromProto(&spb.Status{Code: x.GetCode(), Message: x.GetMessage(), Details: x.GetDetails()}).Err()
}
