// What both ends of the control API's gRPC connections must agree on: the
// service (control/main.cc) and its clients (control/client.cc: agents and
// portcullisctl).
#pragma once

namespace portcullis::control {

// Largest message either end accepts: a policy of a million prefixes fits.
inline constexpr int kMaxMessageBytes = 64 << 20;

// Clients ping an idle connection this often, so that a silent partition
// is noticed within about 15 s, and give up after this long without an ack.
inline constexpr int kClientKeepaliveMs = 10000;
inline constexpr int kClientKeepaliveTimeoutMs = 5000;

// The service accepts pings this close together: less than the clients'
// interval, else it would take their pings for abuse and close connections.
inline constexpr int kServiceMinPingIntervalMs = kClientKeepaliveMs / 2;

// Initial metadata of every Watch stream: the live version when the stream
// opened. Sent at once, so an agent knows the stream is up even when nothing
// else comes (it has the live version already).
inline constexpr char kLiveVersionHeader[] = "portcullis-live-version";

}  // namespace portcullis::control
