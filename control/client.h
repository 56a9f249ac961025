// The client side of the control API, shared by the agent and portcullisctl:
// an mTLS channel to the control service, and gRPC errors turned into
// messages that say what to check.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "control/tls.h"
#include "control/wire.h"

namespace portcullis::control {

struct ClientOptions {
  // HOST:PORT, a name that resolves to several addresses, or several
  // IP:PORT endpoints joined by commas (replicas: see ChannelTarget).
  std::string target;
  TlsPaths tls;             // --ca, --cert, --key
  std::string server_name;  // name expected in the server certificate; default: HOST
  bool insecure_plaintext = false;
  // A TCP connection of its own, not shared with other channels to the same
  // target (gRPC shares by default): for simulating many agents in one process.
  bool own_connection = false;
  absl::Duration tls_refresh = kDefaultTlsRefresh;  // how often the files are re-read
  // How long a keepalive ping may go unanswered before the connection is
  // dropped. Longer only for thousands of simulated agents in one process,
  // whose event loop answers late.
  absl::Duration keepalive_timeout = absl::Milliseconds(kClientKeepaliveTimeoutMs);
  // One of the endpoints in `target` (IP:PORT) to try only after the others:
  // the replica an agent leaves because it is stale.
  std::string try_last;
};

// Checks the certificate files (errors name the flag) and makes the channel,
// which re-reads them every `tls_refresh`.
// Keepalive pings (every 10 s, 5 s to answer) let a watch notice a dead
// peer within about 15 s.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options);

// The gRPC target for --control. One HOST:PORT is used as is (a name with
// several addresses fails over among them). Several IP:PORT endpoints,
// comma-separated and of one family, become one target (ipv4:... or
// ipv6:...) in a shuffled order, so that a fleet spreads over the
// replicas; when the connected one is gone, the channel goes on to the
// next. Names in a list are refused: one name with several addresses does
// that job. The endpoint `last` (as PeerEndpoint spells it), if listed, is
// put last.
absl::StatusOr<std::string> ChannelTarget(const std::string& control, absl::string_view last = "");

// The IP:PORT (or [IPv6]:PORT) of a gRPC peer ("ipv4:198.18.0.2:9443"),
// spelled as ChannelTarget spells endpoints.
std::string PeerEndpoint(absl::string_view peer);

// Whether --control names somewhere else to go than the replica connected
// to: several endpoints, or a name (which may resolve to several addresses).
bool MayFailOver(const std::string& control);

// A gRPC status as an absl one, explaining transport and TLS failures.
absl::Status FromGrpc(const grpc::Status& status, absl::string_view target);

}  // namespace portcullis::control
