/**
 * The policy `egress-guard run` uses when no policy file and no allowed-endpoints are given: audit mode
 * (nothing breaks) with the hosts a typical GitHub Actions job talks to, so the first run's report only
 * shows what is special about the job.
 */
export const DEFAULT_POLICY_NAME = '<embedded default policy>';

export const DEFAULT_POLICY_YAML = `# egress-guard embedded default policy
mode: audit
dns: policy
allowed-endpoints:
  - github.com:443
  - api.github.com:443
  - codeload.github.com:443
  - uploads.github.com:443
  - objects.githubusercontent.com:443
  - raw.githubusercontent.com:443
  - release-assets.githubusercontent.com:443
  - pkg-containers.githubusercontent.com:443
  - "*.actions.githubusercontent.com:443"
  - "productionresultssa*.blob.core.windows.net:443"
  - ghcr.io:443
  - registry.npmjs.org:443
  - registry.yarnpkg.com:443
  - pypi.org:443
  - files.pythonhosted.org:443
  - proxy.golang.org:443
  - sum.golang.org:443
  - index.crates.io:443
  - static.crates.io:443
  - repo.maven.apache.org:443
  - repo1.maven.org:443
  - deb.debian.org:443
  - deb.debian.org:80
  - security.debian.org:80
  - archive.ubuntu.com:80
  - security.ubuntu.com:80
allowed-ips: []
trusted-ranges: []
`;
