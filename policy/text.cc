#include "policy/text.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <openssl/sha.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policy/rules.h"

namespace portcullis::policy {
namespace {

const char* ActionWord(v1::Action a) { return a == v1::ACTION_ALLOW ? "allow" : "deny"; }

std::string PortsText(const v1::PortRule& rule) {
  return absl::StrJoin(rule.ports(), ",", [](std::string* out, const v1::PortRange& r) {
    if (r.first() == r.last()) {
      absl::StrAppend(out, r.first());
    } else {
      absl::StrAppend(out, r.first(), "-", r.last());
    }
  });
}

void EmitRate(YAML::Emitter& out, const char* key, const v1::Rate& rate) {
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "rate"
      << YAML::Value << rate.rate() << YAML::Key << "burst" << YAML::Value << rate.burst()
      << YAML::EndMap;
}

void EmitStrings(YAML::Emitter& out, const google::protobuf::RepeatedPtrField<std::string>& items) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const std::string& s : items) out << YAML::DoubleQuoted << s;
  out << YAML::EndSeq;
}

void EmitRules(YAML::Emitter& out, const char* key,
               const google::protobuf::RepeatedPtrField<v1::PortRule>& rules) {
  out << YAML::Key << key << YAML::Value << YAML::BeginSeq;
  for (const v1::PortRule& r : rules) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "ports" << YAML::Value << YAML::Flow
        << YAML::BeginSeq;
    for (const v1::PortRange& p : r.ports()) {
      if (p.first() == p.last()) {
        out << p.first();
      } else {
        out << YAML::DoubleQuoted << absl::StrCat(p.first(), "-", p.last());
      }
    }
    out << YAML::EndSeq;
    if (r.proto() != v1::PROTOCOL_UNSPECIFIED) {
      out << YAML::Key << "proto" << YAML::Value << std::string(ProtocolName(r.proto()));
    }
    if (r.has_from()) {
      out << YAML::Key << "from" << YAML::Value;
      if (r.from().any()) {
        out << "any";
      } else {
        out << YAML::Flow << YAML::BeginSeq;
        for (const std::string& s : r.from().sets()) out << YAML::DoubleQuoted << s;
        out << YAML::EndSeq;
      }
    }
    if (r.has_syn_rate()) EmitRate(out, "synRate", r.syn_rate());
    if (r.has_conn_rate()) EmitRate(out, "connRate", r.conn_rate());
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

}  // namespace

std::string ToYaml(const v1::Policy& p) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "apiVersion" << YAML::Value << YAML::DoubleQuoted << p.api_version();
  out << YAML::Key << "kind" << YAML::Value << YAML::DoubleQuoted << p.kind();
  if (p.has_metadata()) {
    out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap << YAML::Key << "name"
        << YAML::Value << YAML::DoubleQuoted << p.metadata().name() << YAML::EndMap;
  }
  if (p.has_spec()) {
    const v1::PolicySpec& s = p.spec();
    out << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
    if (s.mode() != v1::MODE_UNSPECIFIED) {
      out << YAML::Key << "mode" << YAML::Value
          << (s.mode() == v1::MODE_AUDIT ? "audit" : "enforce");
    }
    if (s.default_action() != v1::ACTION_UNSPECIFIED) {
      out << YAML::Key << "defaultAction" << YAML::Value << ActionWord(s.default_action());
    }
    if (s.destinations_size()) {
      out << YAML::Key << "destinations" << YAML::Value;
      EmitStrings(out, s.destinations());
    }
    if (s.sets_size()) {
      out << YAML::Key << "sets" << YAML::Value << YAML::BeginMap;
      for (const v1::CidrSet& set : s.sets()) {
        out << YAML::Key << YAML::DoubleQuoted << set.name() << YAML::Value;
        EmitStrings(out, set.cidrs());
      }
      out << YAML::EndMap;
    }
    if (s.blocklist_size()) {
      out << YAML::Key << "blocklist" << YAML::Value;
      EmitStrings(out, s.blocklist());
    }
    if (s.failsafe_size()) EmitRules(out, "failsafe", s.failsafe());
    if (s.ports_size()) EmitRules(out, "ports", s.ports());
    if (s.icmp() != v1::ACTION_UNSPECIFIED) {
      out << YAML::Key << "icmp" << YAML::Value << ActionWord(s.icmp());
    }
    if (s.fragments() != v1::ACTION_UNSPECIFIED) {
      out << YAML::Key << "fragments" << YAML::Value << ActionWord(s.fragments());
    }
    if (s.has_rate_limits()) {
      const v1::RateLimits& rl = s.rate_limits();
      out << YAML::Key << "rateLimits" << YAML::Value << YAML::BeginMap;
      if (rl.has_syn()) {
        out << YAML::Key << "syn" << YAML::Value << YAML::BeginMap;
        if (rl.syn().has_per_source()) EmitRate(out, "perSource", rl.syn().per_source());
        if (rl.syn().has_global()) EmitRate(out, "global", rl.syn().global());
        if (rl.syn().has_source_prefix()) {
          out << YAML::Key << "sourcePrefix" << YAML::Value << YAML::Flow << YAML::BeginMap
              << YAML::Key << "ipv4" << YAML::Value << rl.syn().source_prefix().ipv4() << YAML::Key
              << "ipv6" << YAML::Value << rl.syn().source_prefix().ipv6() << YAML::EndMap;
        }
        if (rl.syn().cookies() != v1::COOKIES_UNSPECIFIED) {
          out << YAML::Key << "cookies" << YAML::Value
              << std::string(CookiesWord(rl.syn().cookies()));
        }
        out << YAML::EndMap;
      }
      if (rl.has_connections()) {
        out << YAML::Key << "connections" << YAML::Value << YAML::BeginMap;
        if (rl.connections().has_per_source()) {
          EmitRate(out, "perSource", rl.connections().per_source());
        }
        out << YAML::EndMap;
      }
      if (rl.has_icmp()) {
        out << YAML::Key << "icmp" << YAML::Value << YAML::BeginMap;
        if (rl.icmp().has_per_source()) EmitRate(out, "perSource", rl.icmp().per_source());
        out << YAML::EndMap;
      }
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return absl::StrCat(out.c_str(), "\n");
}

std::string RuleText(const v1::PortRule& rule) {
  std::string text = absl::StrCat(ProtocolName(rule.proto()), " ", PortsText(rule), " from ");
  if (rule.from().any()) {
    absl::StrAppend(&text, "any");
  } else {
    absl::StrAppend(&text, "[", absl::StrJoin(rule.from().sets(), ", "), "]");
  }
  if (rule.has_syn_rate()) {
    absl::StrAppend(&text, " synRate ", rule.syn_rate().rate(), "/", rule.syn_rate().burst());
  }
  if (rule.has_conn_rate()) {
    absl::StrAppend(&text, " connRate ", rule.conn_rate().rate(), "/", rule.conn_rate().burst());
  }
  return text;
}

std::string Sha256Label(absl::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  return absl::StrCat("sha256:", absl::BytesToHexString(absl::string_view(
                                     reinterpret_cast<const char*>(digest), sizeof(digest))));
}

std::string ContentHash(const v1::Policy& policy) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    policy.SerializeToCodedStream(&coded);
  }
  return Sha256Label(bytes);
}

}  // namespace portcullis::policy
