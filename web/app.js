// kerasbert's MediaPipe-ready files in the browser, on MediaPipe Tasks' own runtime.
//
// The page loads embedder_<kind>.tflite and sentiment_<kind>.tflite (kind from
// ?kind=, default int8) from ./models/, and scores the two sentences as the
// export's manifest says: similarity = 5 * max(cosine, 0) of the embeddings.
// With ?check=cases.json it scores those cases and POSTs the numbers to
// /results, for web/check.py to compare with the Python scorer.
import {FilesetResolver, TextClassifier, TextEmbedder}
  from "./node_modules/@mediapipe/tasks-text/text_bundle.mjs";

// MediaPipe's BERT tokenizer lower-cases but keeps accents and compatibility
// forms; the models were trained on tf-text's uncased normalisation (NFKD,
// case folding, accents dropped, ignorable characters removed, control and
// format characters as spaces). Applied first, MediaPipe's ids are the
// training ids (web/check.py and tests/test_device_models.py check it).
export function bertNormalize(text) {
  return text.replace(/\p{Cc}/gu, " ").normalize("NFKD").toLowerCase()
    .replace(/ß/g, "ss").replace(/ς/g, "σ").normalize("NFKD")
    .replace(/\p{Mn}/gu, "").replace(/\p{Default_Ignorable_Code_Point}/gu, "")
    .replace(/\p{Cf}/gu, " ");
}

const params = new URLSearchParams(location.search);
const kind = params.get("kind") || "int8";
const $ = (id) => document.getElementById(id);

function similarity(embedder, a, b) {
  const u = embedder.embed(bertNormalize(a)).embeddings[0];
  const v = embedder.embed(bertNormalize(b)).embeddings[0];
  return 5 * Math.max(TextEmbedder.cosineSimilarity(u, v), 0);
}

function sentiment(classifier, text) {
  const categories = classifier.classify(bertNormalize(text)).classifications[0].categories;
  return categories.map((c) => ({index: c.index, label: c.categoryName, score: c.score}))
    .sort((x, y) => x.index - y.index);
}

function render(embedder, classifier) {
  const a = $("a").value, b = $("b").value;
  if (!a.trim() || !b.trim()) {
    $("score").textContent = "–";  // an empty text has nothing to compare
    $("bar").style.width = "0";
  } else {
    const s = similarity(embedder, a, b);
    $("score").textContent = s.toFixed(2);
    $("bar").style.width = `${(100 * s) / 5}%`;
  }
  $("sentiment").innerHTML = a.trim() ? sentiment(classifier, a).map((c) =>
    `<tr><td>${c.label}</td><td>${c.score.toFixed(3)}</td>` +
    `<td><div class="bar" style="width:${Math.round(200 * c.score)}px"></div></td></tr>`).join("")
    : "";
}

async function main() {
  const fileset = await FilesetResolver.forTextTasks("./node_modules/@mediapipe/tasks-text/wasm");
  const embedder = await TextEmbedder.createFromOptions(fileset,
    {baseOptions: {modelAssetPath: `models/embedder_${kind}.tflite`}});
  const classifier = await TextClassifier.createFromOptions(fileset,
    {baseOptions: {modelAssetPath: `models/sentiment_${kind}.tflite`}, maxResults: -1});
  $("status").textContent = `MediaPipe Tasks, embedder_${kind}.tflite and sentiment_${kind}.tflite`;
  for (const id of ["a", "b"]) $(id).addEventListener("input", () => render(embedder, classifier));
  render(embedder, classifier);

  const check = params.get("check");
  if (check) {
    const cases = await (await fetch(check)).json();
    const started = performance.now();
    const scores = cases.pairs.map(([a, b]) => similarity(embedder, a, b));
    const pairMs = (performance.now() - started) / Math.max(cases.pairs.length, 1);
    const sentiments = cases.sentences.map((s) => sentiment(classifier, s).map((c) => c.score));
    await fetch("/results", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({kind, scores, sentiments, pair_ms: pairMs,
                            user_agent: navigator.userAgent})});
    $("status").textContent += ` — checked ${scores.length} pairs`;
  }
}

main().catch(async (e) => {
  $("status").textContent = `Error: ${e}`;
  if (params.get("check")) {
    await fetch("/results", {method: "POST", body: JSON.stringify({error: String(e)})});
  }
});
