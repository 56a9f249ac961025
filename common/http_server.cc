#include "common/http_server.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/text_serializer.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace portcullis {
namespace {

void Reply(struct mg_connection* conn, int code, const char* reason, const std::string& body,
           const char* type = "text/plain; charset=utf-8") {
  mg_printf(
      conn,
      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
      code, reason, type, body.size());
  mg_write(conn, body.data(), body.size());
}

class MetricsHandler : public CivetHandler {
 public:
  explicit MetricsHandler(std::vector<std::shared_ptr<prometheus::Collectable>> sources)
      : sources_(std::move(sources)) {}
  bool handleGet(CivetServer*, struct mg_connection* conn) override {
    std::vector<prometheus::MetricFamily> families;
    for (const auto& s : sources_) {
      auto f = s->Collect();
      families.insert(families.end(), std::make_move_iterator(f.begin()),
                      std::make_move_iterator(f.end()));
    }
    Reply(conn, 200, "OK", prometheus::TextSerializer().Serialize(families),
          "text/plain; version=0.0.4; charset=utf-8");
    return true;
  }

 private:
  std::vector<std::shared_ptr<prometheus::Collectable>> sources_;
};

class StaticHandler : public CivetHandler {
 public:
  explicit StaticHandler(const std::atomic<bool>* ready) : ready_(ready) {}
  bool handleGet(CivetServer*, struct mg_connection* conn) override {
    if (ready_ == nullptr || ready_->load()) {
      Reply(conn, 200, "OK", "ok\n");
    } else {
      Reply(conn, 503, "Service Unavailable", "not ready\n");
    }
    return true;
  }

 private:
  const std::atomic<bool>* ready_;
};

}  // namespace

struct HttpServer::Handlers {
  std::unique_ptr<MetricsHandler> metrics;
  std::unique_ptr<StaticHandler> healthz;
  std::unique_ptr<StaticHandler> readyz;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& address, std::vector<std::shared_ptr<prometheus::Collectable>> sources,
    const std::atomic<bool>* ready) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->handlers_ = std::make_unique<Handlers>();
  s->handlers_->metrics = std::make_unique<MetricsHandler>(std::move(sources));
  s->handlers_->healthz = std::make_unique<StaticHandler>(nullptr);
  s->handlers_->readyz = std::make_unique<StaticHandler>(ready);
  // Debian's CivetWeb is built without IPv6: say so rather than "cannot
  // listen".
  if (std::count(address.begin(), address.end(), ':') > 1 && !mg_check_feature(8)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-addr ", address,
        ": this build's HTTP server (CivetWeb) has no IPv6; give an IPv4 address or 0.0.0.0"));
  }
  try {
    // Workers are few and the probes must always find one: a client that
    // holds a request open (slowloris: two held /healthz for 29.5 s with 2
    // workers, and kubelet restarts an agent that misses three probes) is
    // cut off after a second, requests are small, and connections are not
    // kept alive. CivetWeb has no per-client connection limit; the request
    // timeout bounds what each connection holds.
    s->server_ = std::make_unique<CivetServer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", "16", "request_timeout_ms", "1000",
        "keep_alive_timeout_ms", "0", "linger_timeout_ms", "0", "max_request_size", "8192",
        "listen_backlog", "128", "enable_keep_alive", "no"});
  } catch (const CivetException& e) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-addr ", address, ": cannot listen (", e.what(), ")"));
  }
  s->server_->addHandler("/metrics", s->handlers_->metrics.get());
  s->server_->addHandler("/healthz", s->handlers_->healthz.get());
  s->server_->addHandler("/readyz", s->handlers_->readyz.get());
  return s;
}

HttpServer::~HttpServer() {
  if (server_) server_->close();
}

}  // namespace portcullis
