// Pages with HTMX cards that can fail upstream (the generator, Stripe) link this file.
// Their 502/503 answers are cards with a plain message, so swap them in like any
// other answer rather than dropping them (htmx's default for 5xx).
document.addEventListener("htmx:beforeSwap", function (event) {
  var status = event.detail.xhr.status;
  if (status === 502 || status === 503) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// The generator shows what the chosen model costs and the balance after it, before
// Generate is pressed; each model's radio carries that sentence (drawn by the server).
document.addEventListener("change", function (event) {
  var input = event.target;
  var summary = document.getElementById("cost-summary");
  if (input.name === "model" && summary && input.dataset.summary) {
    summary.textContent = input.dataset.summary;
  }
});
