# Homebrew formula for bedrock-keyd: builds from source with cargo and installs the
# binary, the man page, an example config and a launchd service (brew services).
#
#   brew install --HEAD ./packaging/homebrew/bedrock-keyd.rb     # from this checkout
#   brew services start bedrock-keyd
#
# Release checklist: point url at the tag's tarball and set sha256 to
# `shasum -a 256` of it (the placeholder below fails the download on purpose).
class BedrockKeyd < Formula
  desc "Keeps short-term Amazon Bedrock API keys fresh"
  homepage "https://github.com/bedrock-keyd/bedrock-keyd"
  url "https://github.com/bedrock-keyd/bedrock-keyd/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/bedrock-keyd/bedrock-keyd.git", branch: "main"

  # Compiled here; nothing of Rust is needed at run time.
  depends_on "rust" => :build

  def install
    # std_cargo_args: --locked (Cargo.lock pins every crate), --root prefix, --path .
    system "cargo", "install", *std_cargo_args
    man1.install "packaging/man/bedrock-keyd.1"
    # The laptop config (Keychain sink); copied into ~/.config by the user (caveats):
    # brew must not write into home directories.
    pkgshare.install "packaging/launchd/config.toml"
  end

  def caveats
    <<~EOS
      bedrock-keyd reads ~/.config/bedrock-keyd/config.toml. Start from the example
      (a Keychain sink), then start the service:
        mkdir -p ~/.config/bedrock-keyd
        cp #{opt_pkgshare}/config.toml ~/.config/bedrock-keyd/config.toml
        bedrock-keyd check
        brew services start bedrock-keyd
      Read the key:
        security find-generic-password -s bedrock-keyd -a default -w
    EOS
  end

  # The same choices as packaging/launchd/com.github.bedrock-keyd.plist, with
  # Homebrew's prefix; brew generates the plist (label homebrew.mxcl.bedrock-keyd).
  service do
    # The daemon; it finds ~/.config/bedrock-keyd/config.toml itself.
    run [opt_bin/"bedrock-keyd", "run"]
    # RunAtLoad: start at login, so a key exists before the first terminal opens.
    run_type :immediate
    # Restart after failures (crash, credentials unavailable, broken config); a clean
    # exit 0 after SIGTERM stays down.
    keep_alive successful_exit: false
    # ThrottleInterval: at most one restart a minute (no spinning on a broken config
    # or a laptop without network).
    restart_delay 60
    # Not interactive work: macOS may throttle it and coalesce its timers; refreshes
    # have minutes of margin and the daemon re-mints on wake.
    process_type :background
    # stderr carries the log (never the key); stdout is empty but kept beside it.
    log_path var/"log/bedrock-keyd.log"
    error_log_path var/"log/bedrock-keyd.log"
  end

  test do
    # Minting is a local signature: example credentials suffice, no network needed.
    ENV["AWS_ACCESS_KEY_ID"] = "AKIAIOSFODNN7EXAMPLE"
    ENV["AWS_SECRET_ACCESS_KEY"] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    key = shell_output("#{bin}/bedrock-keyd mint --region us-east-1 --lifetime 1h")
    assert_match(/\Abedrock-api-key-/, key)
    assert_match "us-east-1", pipe_output("#{bin}/bedrock-keyd inspect -", key)
    assert_match version.to_s, shell_output("#{bin}/bedrock-keyd --version")
  end
end
