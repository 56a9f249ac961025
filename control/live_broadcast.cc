#include "control/live_broadcast.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "control/rollout.h"
#include "control/wire.h"

namespace portcullis::control {
namespace {

// The wire encoding of `message`; gRPC would make the same for each write.
grpc::ByteBuffer Encode(const v1::PolicyVersion& message) {
  grpc::ByteBuffer bytes;
  bool own = false;
  // Only a message over protobuf's 2 GB limit fails, and versions are
  // bounded far below it (kMaxMessageBytes).
  const grpc::Status s =
      grpc::SerializationTraits<v1::PolicyVersion>::Serialize(message, &bytes, &own);
  if (!s.ok()) LogError("cannot encode a policy version", {{"error", s.error_message()}});
  return bytes;
}

std::shared_ptr<const EncodedVersion> EncodeVersion(
    std::shared_ptr<const v1::PolicyVersion> version) {
  if (!version) return nullptr;
  auto encoded = std::make_shared<EncodedVersion>();
  encoded->bytes = Encode(*version);
  encoded->version = std::move(version);
  return encoded;
}

}  // namespace

// One agent's policy stream: the live version at once (unless the agent has
// it), then each newer one, and a notice whenever the replica goes stale or
// recovers.
class WatchReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  WatchReactor(LiveBroadcast* broadcast, const v1::WatchRequest& request,
               LiveBroadcast::Owner owner)
      : broadcast_(broadcast), request_(request), owner_(std::move(owner)) {}

  const LiveBroadcast::Owner& owner() const { return owner_; }
  const v1::WatchRequest& request() const { return request_; }

  // Sends the headers, then `live` unless the agent has it. Versions offered
  // before this (by a push racing the stream's start) wait until now.
  void Start(grpc::CallbackServerContext* ctx, std::shared_ptr<const EncodedVersion> encoded,
             bool stale) {
    const v1::PolicyVersion* live = encoded ? encoded->version.get() : nullptr;
    ctx->AddInitialMetadata(kLiveVersionHeader, absl::StrCat(live ? live->version() : 0));
    StartSendInitialMetadata();
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    stale_ = stale;
    // The agent is on what it asked with until it is sent another.
    on_version_ = request_.applied_version();
    on_hash_ = request_.applied_hash();
    // What the agent has is not sent again, unless it waits to learn that
    // it was confirmed, and it was.
    const bool has_it = live && live->version() == request_.applied_version() &&
                        live->content_hash() == request_.applied_hash() &&
                        live->shadow().content_hash() == request_.shadow_hash();
    if (live && (!has_it || (request_.awaiting_confirmation() && live->confirmed_unix_nanos()))) {
      Take(std::move(encoded));
    }
    if (!writing_) WriteNext();
  }

  // Replaces what is pending; writes it unless a write is in flight.
  void Offer(std::shared_ptr<const EncodedVersion> version) {
    std::lock_guard<std::mutex> lock(mu_);
    Take(std::move(version));
    if (started_ && !writing_) WriteNext();
  }

  // The replica went stale or recovered: the agent is told once the
  // version pending, if any, is written.
  void SetStale(bool stale) {
    std::lock_guard<std::mutex> lock(mu_);
    stale_ = stale;
    if (started_ && !writing_) WriteNext();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    current_.reset();
    if (!ok) {
      FinishOnce(grpc::Status::CANCELLED);
      return;
    }
    WriteNext();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishOnce(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    broadcast_->Closed(this);
    delete this;
  }

  // Ends the stream from outside: at shutdown, or when its certificate no
  // longer holds.
  void End(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    FinishOnce(status);
  }

 private:
  // Keeps `version` as the one to send next, unless a newer one was
  // offered already: version numbers only grow (a rollback is a new one),
  // and a stream must never go back. The same version once confirmed, or
  // with another shadow candidate, is newer than it was.
  void Take(std::shared_ptr<const EncodedVersion> encoded) {
    const v1::PolicyVersion& version = *encoded->version;
    const Order order{version.version(), version.confirmed_unix_nanos() != 0,
                      version.shadow_generation()};
    if (finished_ || (newest_taken_ && order <= newest_)) return;
    newest_ = order;
    newest_taken_ = true;
    pending_ = std::move(encoded);
  }
  // A pending version first, then a notice if the agent's idea of
  // staleness is not the replica's: a notice never overtakes a version.
  void WriteNext() {
    if (finished_) return;
    if (pending_) {
      current_ = std::move(pending_);
      on_version_ = current_->version->version();
      on_hash_ = current_->version->content_hash();
      writing_ = true;
      StartWrite(&current_->bytes);
    } else if (told_stale_ != stale_ && request_.reads_notices()) {
      told_stale_ = stale_;
      v1::PolicyVersion notice;
      notice.set_notice(true);
      notice.set_stale(stale_);
      notice.set_version(on_version_);
      notice.set_content_hash(on_hash_);
      notice_ = Encode(notice);
      writing_ = true;
      StartWrite(&notice_);
    }
  }
  void FinishOnce(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  LiveBroadcast* broadcast_;
  const v1::WatchRequest request_;
  const LiveBroadcast::Owner owner_;
  std::mutex mu_;
  bool started_ = false;
  using Order = std::tuple<uint64_t, bool, uint64_t>;  // version, confirmed, shadow generation
  Order newest_{0, false, 0};                          // the newest taken
  bool newest_taken_ = false;
  bool writing_ = false;
  bool finished_ = false;
  std::shared_ptr<const EncodedVersion> current_, pending_;
  bool stale_ = false;       // the replica's state
  bool told_stale_ = false;  // what the agent was told; a stream starts not stale
  uint64_t on_version_ = 0;  // the version the agent is on, as far as the stream knows
  std::string on_hash_;
  grpc::ByteBuffer notice_;  // the notice in flight; rewritten only when none is
};

LiveBroadcast::LiveBroadcast(uint32_t max_streams, prometheus::Registry& registry)
    : max_streams_(max_streams),
      live_version_(prometheus::BuildGauge()
                        .Name("portcullis_control_live_version")
                        .Help("The live policy version")
                        .Register(registry)
                        .Add({})),
      watch_streams_(prometheus::BuildGauge()
                         .Name("portcullis_control_watch_streams")
                         .Help("Open agent policy streams")
                         .Register(registry)
                         .Add({})) {}

LiveBroadcast::~LiveBroadcast() {
  std::lock_guard<std::mutex> lock(mu_);
  for (WatchReactor* w : watchers_) {
    w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the control service is stopping"));
  }
}

size_t LiveBroadcast::EndStreams(const std::function<absl::Status(const PeerCertificate&)>& holds) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t ended = 0;
  for (WatchReactor* w : watchers_) {
    if (!w->owner().certificate) continue;
    if (absl::Status s = holds(*w->owner().certificate); !s.ok()) {
      w->End(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(s.message())));
      ++ended;
    }
  }
  return ended;
}

void LiveBroadcast::SetStale(bool stale) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stale_ == stale) return;
  stale_ = stale;
  for (WatchReactor* w : watchers_) w->SetStale(stale);
}

std::shared_ptr<const v1::PolicyVersion> LiveBroadcast::Live() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_ ? live_->version : nullptr;
}

std::shared_ptr<const v1::PolicyVersion> LiveBroadcast::Stable() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stable_ ? stable_->version : nullptr;
}

std::shared_ptr<const EncodedVersion> LiveBroadcast::For(const v1::WatchRequest& request) const {
  if (live_ && live_->version->has_rollout() && stable_ &&
      !Selects(live_->version->rollout(), request.node(), request.node_labels())) {
    return stable_;
  }
  return live_;
}

void LiveBroadcast::Publish(std::shared_ptr<const v1::PolicyVersion> version,
                            std::shared_ptr<const v1::PolicyVersion> stable) {
  // Encoded outside mu_ (a 100k-prefix version takes milliseconds, and
  // streams open and close meanwhile), under publish_mu_ so that versions
  // are made live in the order they were published.
  std::lock_guard<std::mutex> publishing(publish_mu_);
  live_version_.Set(static_cast<double>(version->version()));
  const bool canary = version->has_rollout();
  std::shared_ptr<const EncodedVersion> live = EncodeVersion(std::move(version));
  std::shared_ptr<const EncodedVersion> kept = canary ? EncodeVersion(std::move(stable)) : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  live_ = std::move(live);
  stable_ = std::move(kept);
  for (WatchReactor* w : watchers_) w->Offer(For(w->request()));
}

absl::StatusOr<grpc::ServerWriteReactor<grpc::ByteBuffer>*> LiveBroadcast::Open(
    grpc::CallbackServerContext* ctx, const v1::WatchRequest& request, Owner owner) {
  const std::string identity = owner.identity;
  const uint32_t per_identity = owner.per_identity;
  auto* reactor = new WatchReactor(this, request, std::move(owner));
  std::shared_ptr<const EncodedVersion> live;
  bool stale = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (watchers_.size() >= max_streams_) {
      delete reactor;
      return absl::ResourceExhaustedError(
          absl::StrCat("too many policy streams (", max_streams_, ")"));
    }
    if (per_identity && per_identity_[identity] >= per_identity) {
      delete reactor;
      return absl::ResourceExhaustedError(
          absl::StrCat("too many policy streams for \"", identity, "\" (", per_identity, ")"));
    }
    ++per_identity_[identity];
    // Registered and given the live version under one lock: no Publish is
    // missed, and one racing this is held until Start.
    watchers_.insert(reactor);
    watch_streams_.Set(static_cast<double>(watchers_.size()));
    live = For(request);
    stale = stale_;
  }
  reactor->Start(ctx, std::move(live), stale);
  return reactor;
}

void LiveBroadcast::Closed(WatchReactor* reactor) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(reactor);
  if (auto it = per_identity_.find(reactor->owner().identity); it != per_identity_.end()) {
    if (--it->second == 0) per_identity_.erase(it);
  }
  watch_streams_.Set(static_cast<double>(watchers_.size()));
}

}  // namespace portcullis::control
