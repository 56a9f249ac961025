// The HTTP endpoints of the agent and the control service: /metrics
// (Prometheus text format), /healthz (process alive) and /readyz (ready to
// serve: for the agent, programs attached and a policy applied).
#pragma once

#include <prometheus/collectable.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

class CivetServer;

namespace portcullis {

class HttpServer {
 public:
  // Listens on HOST:PORT. `ready` is read on every /readyz.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& address, std::vector<std::shared_ptr<prometheus::Collectable>> sources,
      const std::atomic<bool>* ready);
  ~HttpServer();

 private:
  HttpServer() = default;
  struct Handlers;
  std::unique_ptr<Handlers> handlers_;
  std::unique_ptr<CivetServer> server_;
};

}  // namespace portcullis
