#include "control/sqlite_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/audit_chain.h"

namespace portcullis::control {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS versions (
  version INTEGER PRIMARY KEY,
  created_unix_nanos INTEGER NOT NULL,
  author TEXT NOT NULL,
  reason TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  rollback_of INTEGER NOT NULL,
  policy BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  time_unix_nanos INTEGER NOT NULL,
  principal TEXT NOT NULL,
  role TEXT NOT NULL,
  method TEXT NOT NULL,
  outcome TEXT NOT NULL,
  detail TEXT NOT NULL,
  version INTEGER NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  content_hash TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
  BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
CREATE TABLE IF NOT EXISTS confirmations (
  version INTEGER PRIMARY KEY,
  confirmed_unix_nanos INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS confirmations_no_update BEFORE UPDATE ON confirmations
  BEGIN SELECT RAISE(ABORT, 'confirmations are immutable'); END;
CREATE TABLE IF NOT EXISTS shadows (
  id INTEGER PRIMARY KEY,
  created_unix_nanos INTEGER NOT NULL,
  author TEXT NOT NULL,
  reason TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  live_version INTEGER NOT NULL,
  policy BLOB NOT NULL,
  ended TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rollouts (
  version INTEGER PRIMARY KEY,
  rollout BLOB NOT NULL,
  ended TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS confirmations_no_delete BEFORE DELETE ON confirmations
  BEGIN SELECT RAISE(ABORT, 'confirmations are immutable'); END;
)sql";

// One prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return stmt_ != nullptr; }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  int Step() { return sqlite3_step(stmt_); }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, col)) : "";
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

constexpr char kVersionColumns[] =
    "version, created_unix_nanos, author, reason, content_hash, rollback_of, "
    "confirm_by_unix_nanos, (SELECT confirmed_unix_nanos FROM confirmations c "
    "WHERE c.version = versions.version)";
constexpr int kPolicyColumn = 8;  // the blob, after kVersionColumns

v1::PolicyVersion ReadVersion(const Stmt& s) {
  v1::PolicyVersion v;
  v.set_version(s.Int(0));
  v.set_created_unix_nanos(s.Int(1));
  v.set_author(s.Text(2));
  v.set_reason(s.Text(3));
  v.set_content_hash(s.Text(4));
  v.set_rollback_of(s.Int(5));
  v.set_confirm_by_unix_nanos(s.Int(6));
  v.set_confirmed_unix_nanos(s.Int(7));  // NULL reads as 0
  return v;
}

// A row of kVersionColumns followed by the policy blob.
absl::StatusOr<v1::PolicyVersion> ReadVersionWithPolicy(const Stmt& s) {
  v1::PolicyVersion v = ReadVersion(s);
  if (!v.mutable_policy()->ParseFromString(s.Text(kPolicyColumn))) {
    return absl::DataLossError(absl::StrCat("version ", v.version(), " cannot be decoded"));
  }
  return v;
}

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("--state-dir ", state_dir, ": cannot create: ", ec.message()));
  }
  const std::string path = state_dir + "/control.db";
  // The store is the policy and the audit log: 0600 whatever the umask.
  // SQLite creates the -wal and -shm files with the database's mode.
  if (const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600); fd >= 0) {
    fchmod(fd, 0600);
    close(fd);
  } else {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", why));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, path));
  sqlite3_busy_timeout(db, 5000);
  const std::string restore = absl::StrCat(
      "; the store is damaged. Stop the service, move ", path,
      " (with its -wal and -shm files) aside, and restore the latest backup of it; or, to start "
      "empty, remove it and push the policy again");
  // A damaged file fails here or in the check below; say how to recover.
  if (absl::Status s = store->Exec("PRAGMA journal_mode=WAL"); !s.ok()) {
    return absl::DataLossError(absl::StrCat(s.message(), restore));
  }
  {
    Stmt check(db, "PRAGMA quick_check");
    if (!check.ok() || check.Step() != SQLITE_ROW || check.Text(0) != "ok") {
      return absl::DataLossError(absl::StrCat(path, ": integrity check failed (",
                                              check.ok() ? check.Text(0) : sqlite3_errmsg(db), ")",
                                              restore));
    }
  }
  if (absl::Status s = store->Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
  if (absl::Status s = store->Exec(kSchema); !s.ok()) {
    return absl::DataLossError(absl::StrCat(s.message(), restore));
  }
  // Stores from before the chain covered policies, before entries were
  // signed, and before pushes could await confirmation gain the columns.
  for (auto [table, column, type] :
       {std::tuple{"audit", "content_hash", "TEXT NOT NULL DEFAULT ''"},
        std::tuple{"audit", "signature", "TEXT NOT NULL DEFAULT ''"},
        std::tuple{"versions", "confirm_by_unix_nanos", "INTEGER NOT NULL DEFAULT 0"}}) {
    Stmt has(store->db_, absl::StrCat("SELECT 1 FROM pragma_table_info('", table,
                                      "') WHERE name = '", column, "'")
                             .c_str());
    if (has.ok() && has.Step() == SQLITE_DONE) {
      const std::string alter =
          absl::StrCat("ALTER TABLE ", table, " ADD COLUMN ", column, " ", type);
      if (absl::Status s = store->Exec(alter.c_str()); !s.ok()) {
        return s;
      }
    }
  }
  return store;
}

SqliteStore::~SqliteStore() { sqlite3_close(db_); }

absl::Status SqliteStore::Error(absl::string_view what) const {
  const int code = sqlite3_errcode(db_);
  const std::string message = absl::StrCat(what, ": ", sqlite3_errmsg(db_), " (", path_, ")");
  if (code == SQLITE_FULL) {
    return absl::ResourceExhaustedError(
        absl::StrCat(message, ": the state directory's disk is full; nothing was stored"));
  }
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = err ? err : "unknown error";
    sqlite3_free(err);
    return Error(message);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::PolicyVersion>> SqliteStore::Live() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kVersionColumns,
                           ", policy FROM versions ORDER BY version DESC LIMIT 1")
                  .c_str());
  if (!s.ok()) return Error("cannot read the live version");
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return Error("cannot read the live version");
  return ReadVersionWithPolicy(s);
}

absl::StatusOr<v1::PolicyVersion> SqliteStore::Get(uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(
      db_,
      absl::StrCat("SELECT ", kVersionColumns, ", policy FROM versions WHERE version = ?").c_str());
  if (!s.ok()) return Error("cannot read a version");
  s.Bind(1, static_cast<int64_t>(version));
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("there is no version ", version));
  if (rc != SQLITE_ROW) return Error("cannot read a version");
  return ReadVersionWithPolicy(s);
}

absl::StatusOr<std::vector<v1::PolicyVersion>> SqliteStore::History(uint32_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         absl::StrCat("SELECT ", kVersionColumns, " FROM versions ORDER BY version DESC LIMIT ?")
             .c_str());
  if (!s.ok()) return Error("cannot read the history");
  s.Bind(1, limit == 0 ? int64_t{-1} : int64_t{limit});
  std::vector<v1::PolicyVersion> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadVersion(s));
  if (rc != SQLITE_DONE) return Error("cannot read the history");
  return out;
}

absl::StatusOr<v1::AuditEntry> SqliteStore::InsertAudit(AuditRecord audit, int64_t now_ns) {
  uint64_t seq = 1;
  std::string prev_hash;
  {
    Stmt last(db_, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
    if (!last.ok()) return Error("cannot read the audit log");
    const int rc = last.Step();
    if (rc == SQLITE_ROW) {
      seq = last.Int(0) + 1;
      prev_hash = last.Text(1);
    } else if (rc != SQLITE_DONE) {
      return Error("cannot read the audit log");
    }
  }
  v1::AuditEntry e = ChainEntry(std::move(audit), seq, std::move(prev_hash), now_ns);
  Stmt ins(db_,
           "INSERT INTO audit (seq, time_unix_nanos, principal, role, method, outcome, detail, "
           "version, prev_hash, hash, content_hash, signature) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!ins.ok()) return Error("cannot append to the audit log");
  ins.Bind(1, static_cast<int64_t>(e.seq()))
      .Bind(2, e.time_unix_nanos())
      .Bind(3, e.principal())
      .Bind(4, e.role())
      .Bind(5, e.method())
      .Bind(6, e.outcome())
      .Bind(7, e.detail())
      .Bind(8, static_cast<int64_t>(e.version()))
      .Bind(9, e.prev_hash())
      .Bind(10, e.hash())
      .Bind(11, e.content_hash())
      .Bind(12, e.signature());
  if (ins.Step() != SQLITE_DONE) return Error("cannot append to the audit log");
  return e;
}

absl::Status SqliteStore::InTransaction(const std::function<absl::Status()>& body) {
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status s = body();
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return s;
}

absl::StatusOr<uint64_t> SqliteStore::Generation() {
  std::lock_guard<std::mutex> lock(mu_);
  return GenerationLocked();
}

absl::StatusOr<uint64_t> SqliteStore::GenerationLocked() {
  Stmt last(db_, "SELECT COALESCE(MAX(seq), 0) FROM audit");
  if (!last.ok() || last.Step() != SQLITE_ROW) return Error("cannot read the audit log");
  return static_cast<uint64_t>(last.Int(0));
}

absl::StatusOr<v1::PolicyVersion> SqliteStore::AddVersion(v1::PolicyVersion version,
                                                          AuditRecord audit,
                                                          std::optional<uint64_t> checked_at) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = InTransaction([&]() -> absl::Status {
    if (checked_at) {
      auto now = GenerationLocked();
      if (!now.ok()) return now.status();
      if (*now != *checked_at) return StoreMovedError(*checked_at, *now);
    }
    {
      Stmt last(db_, "SELECT COALESCE(MAX(version), 0) FROM versions");
      if (!last.ok() || last.Step() != SQLITE_ROW) return Error("cannot number a version");
      version.set_version(last.Int(0) + 1);
    }
    const int64_t now = NowNanos();
    version.set_created_unix_nanos(now);
    std::string body;
    version.policy().SerializeToString(&body);
    Stmt ins(db_,
             "INSERT INTO versions (version, created_unix_nanos, author, reason, content_hash, "
             "rollback_of, policy, confirm_by_unix_nanos) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    if (!ins.ok()) return Error("cannot store the version");
    ins.Bind(1, static_cast<int64_t>(version.version()))
        .Bind(2, now)
        .Bind(3, version.author())
        .Bind(4, version.reason())
        .Bind(5, version.content_hash())
        .Bind(6, static_cast<int64_t>(version.rollback_of()))
        .BindBlob(7, body)
        .Bind(8, version.confirm_by_unix_nanos());
    if (ins.Step() != SQLITE_DONE) return Error("cannot store the version");
    Stmt end_rollout(db_, "UPDATE rollouts SET ended = 'ended by version ' || ? WHERE ended = ''");
    if (!end_rollout.ok()) return Error("cannot end the rollout");
    end_rollout.Bind(1, static_cast<int64_t>(version.version()));
    if (end_rollout.Step() != SQLITE_DONE) return Error("cannot end the rollout");
    if (version.has_rollout()) {
      version.mutable_rollout()->set_version(version.version());
      std::string rollout;
      version.rollout().SerializeToString(&rollout);
      Stmt add(db_, "INSERT INTO rollouts (version, rollout) VALUES (?, ?)");
      if (!add.ok()) return Error("cannot store the rollout");
      add.Bind(1, static_cast<int64_t>(version.version())).BindBlob(2, rollout);
      if (add.Step() != SQLITE_DONE) return Error("cannot store the rollout");
    }
    Stmt end(db_,
             "UPDATE shadows SET ended = CASE WHEN content_hash = ? THEN 'promoted to version ' "
             "ELSE 'ended by version ' END || ? WHERE ended = ''");
    if (!end.ok()) return Error("cannot end the shadow candidate");
    end.Bind(1, version.content_hash()).Bind(2, static_cast<int64_t>(version.version()));
    if (end.Step() != SQLITE_DONE) return Error("cannot end the shadow candidate");
    audit.version = version.version();
    audit.content_hash = version.content_hash();
    return InsertAudit(std::move(audit), now).status();
  });
  if (!s.ok()) return s;
  return version;
}

absl::StatusOr<v1::PolicyVersion> SqliteStore::Confirm(uint64_t version, AuditRecord audit) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowNanos();
  absl::Status s = InTransaction([&]() -> absl::Status {
    Stmt known(db_,
               "SELECT (SELECT COUNT(*) FROM versions WHERE version = ?1), "
               "(SELECT COUNT(*) FROM confirmations WHERE version = ?1)");
    if (!known.ok()) return Error("cannot read a version");
    known.Bind(1, static_cast<int64_t>(version));
    if (known.Step() != SQLITE_ROW) return Error("cannot read a version");
    if (known.Int(0) == 0)
      return absl::NotFoundError(absl::StrCat("there is no version ", version));
    Stmt live(db_, "SELECT COALESCE(MAX(version), 0) FROM versions");
    if (!live.ok() || live.Step() != SQLITE_ROW) return Error("cannot read a version");
    if (static_cast<uint64_t>(live.Int(0)) != version) {
      return absl::FailedPreconditionError(absl::StrCat("version ", version, " is no longer live"));
    }
    if (known.Int(1) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("version ", version, " is already confirmed"));
    }
    Stmt ins(db_, "INSERT INTO confirmations (version, confirmed_unix_nanos) VALUES (?, ?)");
    if (!ins.ok()) return Error("cannot store the confirmation");
    ins.Bind(1, static_cast<int64_t>(version)).Bind(2, now);
    if (ins.Step() != SQLITE_DONE) return Error("cannot store the confirmation");
    audit.version = version;
    return InsertAudit(std::move(audit), now).status();
  });
  if (!s.ok()) return s;
  Stmt get(
      db_,
      absl::StrCat("SELECT ", kVersionColumns, ", policy FROM versions WHERE version = ?").c_str());
  if (!get.ok()) return Error("cannot read a version");
  get.Bind(1, static_cast<int64_t>(version));
  if (get.Step() != SQLITE_ROW) return Error("cannot read a version");
  return ReadVersionWithPolicy(get);
}

absl::StatusOr<v1::ShadowCandidate> SqliteStore::AddShadow(v1::ShadowCandidate candidate,
                                                           AuditRecord audit) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = InTransaction([&]() -> absl::Status {
    {
      Stmt last(db_, "SELECT COALESCE(MAX(id), 0) FROM shadows");
      if (!last.ok() || last.Step() != SQLITE_ROW) return Error("cannot number a shadow candidate");
      candidate.set_id(last.Int(0) + 1);
    }
    Stmt end(db_, "UPDATE shadows SET ended = 'replaced by shadow ' || ? WHERE ended = ''");
    if (!end.ok()) return Error("cannot end the shadow candidate");
    end.Bind(1, static_cast<int64_t>(candidate.id()));
    if (end.Step() != SQLITE_DONE) return Error("cannot end the shadow candidate");
    const int64_t now = NowNanos();
    candidate.set_created_unix_nanos(now);
    std::string body;
    candidate.policy().SerializeToString(&body);
    Stmt ins(db_,
             "INSERT INTO shadows (id, created_unix_nanos, author, reason, content_hash, "
             "live_version, policy) VALUES (?, ?, ?, ?, ?, ?, ?)");
    if (!ins.ok()) return Error("cannot store the shadow candidate");
    ins.Bind(1, static_cast<int64_t>(candidate.id()))
        .Bind(2, now)
        .Bind(3, candidate.author())
        .Bind(4, candidate.reason())
        .Bind(5, candidate.content_hash())
        .Bind(6, static_cast<int64_t>(candidate.live_version()))
        .BindBlob(7, body);
    if (ins.Step() != SQLITE_DONE) return Error("cannot store the shadow candidate");
    // The candidate is no version: the chain covers its hash in the detail.
    absl::StrAppend(&audit.detail, "; shadow ", candidate.id(), " ", candidate.content_hash());
    return InsertAudit(std::move(audit), now).status();
  });
  if (!s.ok()) return s;
  return candidate;
}

absl::StatusOr<std::optional<v1::ShadowCandidate>> SqliteStore::Shadow() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT id, created_unix_nanos, author, reason, content_hash, live_version, policy "
         "FROM shadows WHERE ended = '' ORDER BY id DESC LIMIT 1");
  if (!s.ok()) return Error("cannot read the shadow candidate");
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return Error("cannot read the shadow candidate");
  v1::ShadowCandidate c;
  c.set_id(s.Int(0));
  c.set_created_unix_nanos(s.Int(1));
  c.set_author(s.Text(2));
  c.set_reason(s.Text(3));
  c.set_content_hash(s.Text(4));
  c.set_live_version(s.Int(5));
  if (!c.mutable_policy()->ParseFromString(s.Text(6))) {
    return absl::DataLossError(absl::StrCat("shadow candidate ", c.id(), " cannot be decoded"));
  }
  return c;
}

absl::Status SqliteStore::DiscardShadow(uint64_t id, AuditRecord audit) {
  std::lock_guard<std::mutex> lock(mu_);
  return InTransaction([&]() -> absl::Status {
    Stmt end(db_, "UPDATE shadows SET ended = 'discarded' WHERE id = ? AND ended = ''");
    if (!end.ok()) return Error("cannot end the shadow candidate");
    end.Bind(1, static_cast<int64_t>(id));
    if (end.Step() != SQLITE_DONE) return Error("cannot end the shadow candidate");
    if (sqlite3_changes(db_) != 1) {
      return absl::NotFoundError(absl::StrCat("shadow candidate ", id, " is not the current one"));
    }
    return InsertAudit(std::move(audit), NowNanos()).status();
  });
}

absl::StatusOr<std::optional<v1::Rollout>> SqliteStore::Rollout() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT rollout FROM rollouts WHERE ended = '' ORDER BY version DESC LIMIT 1");
  if (!s.ok()) return Error("cannot read the rollout");
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return Error("cannot read the rollout");
  v1::Rollout r;
  if (!r.ParseFromString(s.Text(0))) return absl::DataLossError("the rollout cannot be decoded");
  return r;
}

absl::Status SqliteStore::PromoteRollout(uint64_t version, AuditRecord audit) {
  std::lock_guard<std::mutex> lock(mu_);
  return InTransaction([&]() -> absl::Status {
    Stmt end(db_, "UPDATE rollouts SET ended = 'promoted' WHERE version = ? AND ended = ''");
    if (!end.ok()) return Error("cannot end the rollout");
    end.Bind(1, static_cast<int64_t>(version));
    if (end.Step() != SQLITE_DONE) return Error("cannot end the rollout");
    if (sqlite3_changes(db_) != 1) {
      return absl::NotFoundError(absl::StrCat("version ", version, " is not a canary in progress"));
    }
    audit.version = version;
    return InsertAudit(std::move(audit), NowNanos()).status();
  });
}

absl::Status SqliteStore::UpdateRollout(const v1::Rollout& rollout, AuditRecord audit) {
  std::lock_guard<std::mutex> lock(mu_);
  return InTransaction([&]() -> absl::Status {
    Stmt held(db_, "SELECT rollout FROM rollouts WHERE version = ? AND ended = ''");
    if (!held.ok()) return Error("cannot read the rollout");
    held.Bind(1, static_cast<int64_t>(rollout.version()));
    const int rc = held.Step();
    if (rc == SQLITE_DONE) {
      return absl::NotFoundError(
          absl::StrCat("version ", rollout.version(), " is not a canary in progress"));
    }
    v1::Rollout stored;
    if (rc != SQLITE_ROW || !stored.ParseFromString(held.Text(0))) {
      return Error("cannot read the rollout");
    }
    if (absl::Status s = CheckNextStep(stored, rollout); !s.ok()) return s;
    std::string blob;
    rollout.SerializeToString(&blob);
    Stmt up(db_, "UPDATE rollouts SET rollout = ? WHERE version = ? AND ended = ''");
    if (!up.ok()) return Error("cannot store the rollout");
    up.BindBlob(1, blob).Bind(2, static_cast<int64_t>(rollout.version()));
    if (up.Step() != SQLITE_DONE) return Error("cannot store the rollout");
    if (sqlite3_changes(db_) != 1) {
      return absl::NotFoundError(
          absl::StrCat("version ", rollout.version(), " is not a canary in progress"));
    }
    audit.version = rollout.version();
    return InsertAudit(std::move(audit), NowNanos()).status();
  });
}

absl::Status SqliteStore::AppendAudit(AuditRecord audit) {
  std::lock_guard<std::mutex> lock(mu_);
  return InTransaction([&] { return InsertAudit(std::move(audit), NowNanos()).status(); });
}

absl::StatusOr<std::vector<v1::AuditEntry>> SqliteStore::Audit(uint64_t after_seq, uint32_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT seq, time_unix_nanos, principal, role, method, outcome, detail, version, "
         "prev_hash, hash, content_hash, signature FROM audit WHERE seq > ? ORDER BY seq "
         "LIMIT ?");
  if (!s.ok()) return Error("cannot read the audit log");
  s.Bind(1, static_cast<int64_t>(after_seq)).Bind(2, limit == 0 ? int64_t{-1} : int64_t{limit});
  std::vector<v1::AuditEntry> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    v1::AuditEntry& e = out.emplace_back();
    e.set_seq(s.Int(0));
    e.set_time_unix_nanos(s.Int(1));
    e.set_principal(s.Text(2));
    e.set_role(s.Text(3));
    e.set_method(s.Text(4));
    e.set_outcome(s.Text(5));
    e.set_detail(s.Text(6));
    e.set_version(s.Int(7));
    e.set_prev_hash(s.Text(8));
    e.set_hash(s.Text(9));
    e.set_content_hash(s.Text(10));
    e.set_signature(s.Text(11));
  }
  if (rc != SQLITE_DONE) return Error("cannot read the audit log");
  return out;
}

}  // namespace portcullis::control
