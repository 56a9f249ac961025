#include "agent/cookie_notrack.h"

#include <nftables/libnftables.h>

#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace portcullis::agent {
namespace {

struct NftCtxDeleter {
  void operator()(nft_ctx* ctx) const { nft_ctx_free(ctx); }
};

// Runs an nft script as one transaction in this network namespace; the
// error names what nft said.
absl::Status RunNft(const std::string& script) {
  std::unique_ptr<nft_ctx, NftCtxDeleter> ctx(nft_ctx_new(NFT_CTX_DEFAULT));
  if (ctx == nullptr) return absl::InternalError("nftables: cannot create a context");
  nft_ctx_buffer_error(ctx.get());
  nft_ctx_buffer_output(ctx.get());
  if (nft_run_cmd_from_buffer(ctx.get(), script.c_str()) != 0) {
    const char* error = nft_ctx_get_error_buffer(ctx.get());
    return absl::UnavailableError(
        absl::StrCat("nftables: ", absl::StripAsciiWhitespace(error != nullptr ? error : "")));
  }
  return absl::OkStatus();
}

std::string CookieNotrackScript(uint32_t mark) {
  // `add` then `delete` empties whatever an earlier agent left, in the same
  // transaction as the new definition: no moment without the rule. Raw
  // minus 10: before conntrack (-200) and before any raw rule of another
  // component could see the mark.
  return absl::StrFormat(
      "add table inet %1$s\n"
      "delete table inet %1$s\n"
      "table inet %1$s {\n"
      "  chain cookie-notrack {\n"
      "    type filter hook prerouting priority raw - 10; policy accept;\n"
      "    meta mark & 0x%2$08x == 0x%2$08x meta mark set meta mark & 0x%3$08x notrack\n"
      "  }\n"
      "}\n",
      kNftTable, mark, ~mark);
}

}  // namespace

absl::Status InstallCookieNotrack(uint32_t mark) { return RunNft(CookieNotrackScript(mark)); }

absl::Status RemoveCookieNotrack() {
  return RunNft(absl::StrFormat("add table inet %1$s\ndelete table inet %1$s\n", kNftTable));
}

absl::StatusOr<uint32_t> ParseCookieMark(absl::string_view text) {
  uint32_t mark = 0;
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  const bool hex = absl::ConsumePrefix(&digits, "0x") || absl::ConsumePrefix(&digits, "0X");
  if (digits.empty() ||
      !(hex ? absl::SimpleHexAtoi(digits, &mark) : absl::SimpleAtoi(digits, &mark))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cookie-mark: \"", text, "\" is not a 32-bit mark (e.g. 0x00100000, or 0 for none)"));
  }
  return mark;
}

}  // namespace portcullis::agent
