// Import boundaries of the folder-per-noun layout (issue 9). Run with `npm run lint:imports`.
//
// The layers below are ordered top to bottom: a module may import its own layer and any layer below it, never one
// above it. The forbidden rules are generated from this list, so the order here is the whole layering policy.
// Every entry is a regular expression on the path relative to the repository root; entries in one inner array
// share a rank (they may not import each other either, see `proxy-siblings`).
/** @type {Array<Array<{ name: string, path: string }>>} */
const LAYERS = [
  // The GitHub Action (bundled into action-dist/): it composes like cli/ but nothing imports it.
  [{ name: 'action', path: '^action/' }],
  [{ name: 'bin', path: '^bin/' }],
  [{ name: 'cli', path: '^cli/' }],
  [{ name: 'sidecar', path: '^sidecar/' }],
  [{ name: 'collector', path: '^collector/(?!stores/)' }],
  [{ name: 'collector/stores', path: '^collector/stores/' }],
  [{ name: 'report', path: '^report/' }],
  [
    { name: 'proxy/explicit', path: '^proxy/explicit/' },
    { name: 'proxy/transparent', path: '^proxy/transparent/' },
  ],
  [{ name: 'proxy/relay', path: '^proxy/relay/' }],
  [
    { name: 'dns', path: '^dns/' },
    { name: 'netlog', path: '^netlog/' },
  ],
  [{ name: 'decision', path: '^decision/' }],
  [{ name: 'net', path: '^net/' }],
  [{ name: 'events/delivery', path: '^events/delivery/' }],
  [{ name: 'events', path: '^events/(?!delivery/)' }],
  // The CA and leaf certificates of TLS inspection (and of the test servers): the proxy layers sign with them.
  [{ name: 'certs', path: '^certs/' }],
  [{ name: 'config', path: '^config/' }],
  [{ name: 'policy', path: '^policy/' }],
];

// Leaves: imported only by the composition (cli/, sidecar/) and by test/ and bench/; they import only themselves.
// native/ holds C only (loaded through net/native-addon.ts), so it is a leaf no TypeScript imports.
const LEAVES = ['rules', 'native'];
const LEAF_IMPORTERS = ['action', 'cli', 'sidecar', 'test', 'bench'];

// Every folder of project code (a file elsewhere is reported by `not-in-a-layer`, so no module escapes the rules).
const PROJECT = '^(action|bin|cli|sidecar|collector|report|proxy/(explicit|transparent|relay)|dns|netlog|decision|net|events|config|policy|rules|certs|native|test|bench)/';
const ANY_PROJECT_FOLDER = '^(action|bin|cli|sidecar|collector|report|proxy|dns|netlog|decision|net|events|config|policy|rules|certs|native|test|bench)/';

const layerRules = LAYERS.flatMap((rank, index) =>
  rank.flatMap((lower) =>
    LAYERS.slice(0, index)
      .flat()
      .map((higher) => ({
        name: `layer:${lower.name}->${higher.name}`,
        comment: `${lower.name} is below ${higher.name} in the layer stack: ${lower.name} must not import ${higher.name}.`,
        severity: 'error',
        from: { path: lower.path },
        to: { path: higher.path },
      })),
  ),
);

const leafRules = LEAVES.flatMap((leaf) => [
  {
    name: `leaf:${leaf}-imports-project`,
    comment: `${leaf}/ is a leaf: it imports only ${leaf}/ (plus node built-ins and packages), nothing else of the project.`,
    severity: 'error',
    from: { path: `^${leaf}/` },
    to: { path: ANY_PROJECT_FOLDER, pathNot: `^${leaf}/` },
  },
  {
    name: `leaf:${leaf}-importer`,
    comment: `${leaf}/ may be imported only by ${LEAF_IMPORTERS.map((f) => `${f}/`).join(', ')} (and by itself).`,
    severity: 'error',
    from: { pathNot: `^(${[leaf, ...LEAF_IMPORTERS].join('|')})/` },
    to: { path: `^${leaf}/` },
  },
]);

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'proxy-siblings',
      comment: 'proxy/explicit and proxy/transparent are siblings: what both need belongs in proxy/relay (or lower).',
      severity: 'error',
      from: { path: '^proxy/(explicit|transparent)/' },
      to: { path: '^proxy/(explicit|transparent)/', pathNot: '^proxy/$1/' },
    },
    ...leafRules,
    {
      name: 'not-to-test',
      comment: 'Only test/ may import test/; bench/ may use the test helpers (the .test zone server and its fixture).',
      severity: 'error',
      from: { pathNot: '^test/' },
      to: { path: '^test/', pathNot: '^test/helpers/' },
    },
    {
      name: 'not-to-test-helpers',
      comment: 'Only test/ and bench/ may import test/helpers/.',
      severity: 'error',
      from: { pathNot: '^(test|bench)/' },
      to: { path: '^test/helpers/' },
    },
    {
      name: 'not-to-bench',
      comment: 'Only bench/ and test/ may import bench/.',
      severity: 'error',
      from: { pathNot: '^(bench|test)/' },
      to: { path: '^bench/' },
    },
    {
      name: 'not-in-a-layer',
      comment: `Every module lives in one of the folders the layer rules know (${PROJECT}); add a new folder to LAYERS or LEAVES first.`,
      severity: 'error',
      from: { pathNot: PROJECT },
      to: {},
    },
    {
      name: 'not-to-dev-dep',
      comment:
        'Shipped code must not import a devDependency: the container image prunes them (npm prune --omit=dev). ' +
        'Move the package to dependencies, or keep its use in test/ or bench/. action/ is exempt: the bundler inlines its packages into action-dist/.',
      severity: 'error',
      from: { pathNot: '^(test|bench|action)/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-circular',
      comment: 'No import cycles anywhere (type-only imports included).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that cannot be resolved to a file on disk or an installed package.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|native/build)/' },
    // Type-only imports count: an `import type` that points up the stack couples the layers all the same.
    tsPreCompilationDeps: true,
    // The sources import `./foo.js` meaning `./foo.ts` (NodeNext); the tsconfig gives the resolution settings.
    tsConfig: { fileName: 'tsconfig.json' },
    // Packages resolve as Node resolves them (package.json "exports", then "main"); types only as a fallback.
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      mainFields: ['main', 'types', 'typings'],
    },
    skipAnalysisNotInRules: true,
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
