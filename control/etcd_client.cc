#include "control/etcd_client.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "control/tls.h"

namespace portcullis::control {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// The member is gone, or cannot reach a quorum: another one may answer.
bool MembersFault(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// The member answered, or hung waiting, as one does without a leader:
// etcd's "leader changed", "no leader" and "request timed out, possibly
// due to previous leader failure", or a deadline passed.
bool MayBeElecting(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         absl::StrContains(s.error_message(), "leader");
}

// How long a call goes on asking the members while they elect a leader,
// and the pause between rounds.
constexpr absl::Duration kElectionGrace = absl::Seconds(3);
constexpr absl::Duration kElectionPause = absl::Milliseconds(200);

}  // namespace

std::string EtcdPrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      ++end.back();
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(const EtcdOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("--etcd-endpoints is required with --store etcd");
  }
  std::shared_ptr<grpc::ChannelCredentials> tls;
  std::vector<Member> members;
  for (const std::string& url : options.endpoints) {
    std::string target;
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (absl::StartsWith(url, "http://")) {
      target = url.substr(7);
      creds = grpc::InsecureChannelCredentials();
    } else if (absl::StartsWith(url, "https://")) {
      target = url.substr(8);
      if (!tls) {
        const TlsPaths paths{options.ca_file, options.cert_file, options.key_file};
        if (auto read = ReadTlsFiles(paths, /*identity_optional=*/true, "--etcd-"); !read.ok()) {
          return read.status();
        }
        tls = ReloadingChannelCredentials(paths, kDefaultTlsRefresh);
      }
      creds = tls;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--etcd-endpoints: ", url, " is not an http:// or https:// URL (host:port after it)"));
    }
    if (target.empty() || absl::StrContains(target, "/")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd-endpoints: ", url, " has no host:port, or has a path"));
    }
    grpc::ChannelArguments args;
    // A member that comes back is used again within a second or so, not
    // after gRPC's default backoff of up to two minutes. (The minimum
    // backoff is left alone: gRPC also takes it as the connect timeout.)
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // A member cut off silently (a partition, a powered-off node) leaves a
    // connection that never answers: pings while calls are open find it
    // within 13 s and close it, so calls go to a new connection. (etcd
    // refuses pings more often than its --grpc-keepalive-min-time, 5 s.)
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
    // Versions are read whole: etcd's own request limit is what bounds them.
    args.SetMaxReceiveMessageSize(256 << 20);
    auto channel = grpc::CreateCustomChannel(target, creds, args);
    members.push_back({url, etcdserverpb::KV::NewStub(channel),
                       etcdserverpb::Lease::NewStub(channel),
                       etcdserverpb::Watch::NewStub(channel)});
  }
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(members), options.call_timeout));
}

std::string EtcdClient::Describe() const {
  std::vector<std::string> urls;
  for (const Member& m : members_) urls.push_back(m.url);
  return absl::StrJoin(urls, ",");
}

template <typename Response, typename Call>
absl::StatusOr<Response> EtcdClient::OnAnyMember(const char* what, const Call& call) {
  const absl::Time start = absl::Now();
  std::vector<std::string> failures;
  for (;;) {
    const size_t first = current_.load();
    failures.clear();
    bool electing = false;
    for (size_t i = 0; i < members_.size(); ++i) {
      const size_t m = (first + i) % members_.size();
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(call_timeout_));
      Response response;
      const grpc::Status s = call(members_[m], ctx, response);
      if (s.ok()) {
        current_.store(m);
        return response;
      }
      if (!MembersFault(s)) {
        if (absl::StrContains(s.error_message(), "request is too large")) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "etcd refused the ", what, " as too large (", s.error_message(),
              "): raise the members' --max-request-bytes (etcd's default is 1.5 MiB)"));
        }
        return FromGrpc(s);
      }
      electing = electing || MayBeElecting(s);
      failures.push_back(absl::StrCat(members_[m].url, ": ", s.error_message()));
    }
    // A member that is up but has no leader: the others are electing one
    // (a member of three lost), which takes about two election timeouts.
    // Asked again, so that losing the leader does not fail a push. A retried
    // transaction may find its own first try committed: EtcdStore::Change
    // recognises it.
    if (!electing || absl::Now() - start + kElectionPause >= kElectionGrace) break;
    absl::SleepFor(kElectionPause);
  }
  return absl::UnavailableError(
      absl::StrCat("etcd has no quorum or cannot be reached: no member answered the ", what, " (",
                   absl::StrJoin(failures, "; "), ")"));
}

absl::StatusOr<etcdserverpb::RangeResponse> EtcdClient::Range(
    const etcdserverpb::RangeRequest& request) {
  return OnAnyMember<etcdserverpb::RangeResponse>(
      "read", [&](Member& m, grpc::ClientContext& ctx, etcdserverpb::RangeResponse& out) {
        return m.kv->Range(&ctx, request, &out);
      });
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& request) {
  return OnAnyMember<etcdserverpb::TxnResponse>(
      "transaction", [&](Member& m, grpc::ClientContext& ctx, etcdserverpb::TxnResponse& out) {
        return m.kv->Txn(&ctx, request, &out);
      });
}

absl::StatusOr<etcdserverpb::LeaseGrantResponse> EtcdClient::LeaseGrant(int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_seconds);
  return OnAnyMember<etcdserverpb::LeaseGrantResponse>(
      "lease grant",
      [&](Member& m, grpc::ClientContext& ctx, etcdserverpb::LeaseGrantResponse& out) {
        return m.lease->LeaseGrant(&ctx, request, &out);
      });
}

absl::Status EtcdClient::Watch(
    grpc::ClientContext& ctx, const std::string& key, const std::string& range_end, int64_t from,
    const std::function<bool(const etcdserverpb::WatchResponse&)>& on_response) {
  const size_t m = current_.load();
  auto stream = members_[m].watch->Watch(&ctx);
  etcdserverpb::WatchRequest create;
  create.mutable_create_request()->set_key(key);
  create.mutable_create_request()->set_range_end(range_end);
  create.mutable_create_request()->set_start_revision(from);
  if (!stream->Write(create)) {
    current_.store((m + 1) % members_.size());  // the next read tries another member first
    return absl::UnavailableError(absl::StrCat(members_[m].url, ": cannot open a watch"));
  }
  etcdserverpb::WatchResponse response;
  while (stream->Read(&response)) {
    if (!on_response(response)) {
      ctx.TryCancel();
      stream->Finish().IgnoreError();
      return absl::OkStatus();
    }
  }
  const grpc::Status s = stream->Finish();
  if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
      s.error_code() != grpc::StatusCode::CANCELLED) {
    current_.store((m + 1) % members_.size());
  }
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(members_[m].url, ": ", s.error_message()));
}

absl::Status EtcdClient::AwaitWrite(const std::string& key, int64_t from, absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  // A compacted start revision, a cancel or an event all mean: read again.
  const absl::Status s = Watch(ctx, key, "", from, [](const etcdserverpb::WatchResponse& r) {
    return r.events_size() == 0 && !r.canceled() && r.compact_revision() == 0;
  });
  return absl::IsDeadlineExceeded(s) ? absl::OkStatus() : s;
}

}  // namespace portcullis::control
