//! `GET /metrics`: Prometheus text format (the `prometheus` crate), with vLLM's metric names so
//! that gateways and dashboards made for vLLM read them unchanged (the Gateway API Inference
//! Extension's endpoint picker reads `vllm:num_requests_waiting` and `vllm:kv_cache_usage_perc`).
//! Counters are exact: a request of N completion tokens adds N.
use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub(crate) struct Metrics {
    registry: Registry,
    pub running: IntGauge,
    pub waiting: IntGauge,
    pub kv_usage: Gauge,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    pub prefix_hits: IntCounter,
    pub prefix_queries: IntCounter,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub e2e: Histogram,
    pub success: IntCounterVec,
    /// Every answered request by route and status (ours: vLLM has none).
    pub requests: IntCounterVec,
}

/// Latency buckets in seconds (vLLM's time-to-first-token ones, which cover all three).
const BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];

impl Metrics {
    pub fn new(model: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("model_name", model);
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(name, help).const_label("model_name", model).buckets(BUCKETS.to_vec())
        };
        let m = Self {
            running: IntGauge::with_opts(opts("vllm:num_requests_running", "Requests generating now."))?,
            waiting: IntGauge::with_opts(opts("vllm:num_requests_waiting", "Requests waiting for a slot."))?,
            kv_usage: Gauge::with_opts(opts(
                "vllm:kv_cache_usage_perc",
                "Fraction of the KV cache budget (--max-batch x --max-context positions) the running rows hold (1 = full).",
            ))?,
            prompt_tokens: IntCounter::with_opts(opts("vllm:prompt_tokens_total", "Prompt tokens of finished requests."))?,
            generation_tokens: IntCounter::with_opts(opts(
                "vllm:generation_tokens_total",
                "Completion tokens of finished requests.",
            ))?,
            prefix_hits: IntCounter::with_opts(opts(
                "vllm:prefix_cache_hits_total",
                "Prompt tokens whose keys/values came from the prefix cache.",
            ))?,
            prefix_queries: IntCounter::with_opts(opts(
                "vllm:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache.",
            ))?,
            ttft: Histogram::with_opts(hist("vllm:time_to_first_token_seconds", "Request arrival to its first token."))?,
            tpot: Histogram::with_opts(hist(
                "vllm:time_per_output_token_seconds",
                "Seconds per completion token after the first (per request).",
            ))?,
            e2e: Histogram::with_opts(hist("vllm:e2e_request_latency_seconds", "Request arrival to its last token."))?,
            success: IntCounterVec::new(
                opts(
                    "vllm:request_success_total",
                    "Finished generations by finish reason (a request's every choice and best_of candidate).",
                ),
                &["finished_reason"],
            )?,
            requests: IntCounterVec::new(
                opts("demiurgic_http_requests_total", "Answered HTTP requests by route and status."),
                &["route", "status"],
            )?,
            registry,
        };
        let all: [Box<dyn prometheus::core::Collector>; 12] = [
            Box::new(m.running.clone()),
            Box::new(m.waiting.clone()),
            Box::new(m.kv_usage.clone()),
            Box::new(m.prompt_tokens.clone()),
            Box::new(m.generation_tokens.clone()),
            Box::new(m.prefix_hits.clone()),
            Box::new(m.prefix_queries.clone()),
            Box::new(m.ttft.clone()),
            Box::new(m.tpot.clone()),
            Box::new(m.e2e.clone()),
            Box::new(m.success.clone()),
            Box::new(m.requests.clone()),
        ];
        for c in all {
            m.registry.register(c)?;
        }
        Ok(m)
    }

    /// One finished generation request: its tokens, finish reasons and latencies (seconds).
    pub fn finished(
        &self,
        prompt: usize,
        cached: usize,
        completion: usize,
        reasons: &[&str],
        ttft: Option<f64>,
        e2e: f64,
    ) {
        self.prompt_tokens.inc_by(prompt as u64);
        self.prefix_hits.inc_by(cached as u64);
        self.generation_tokens.inc_by(completion as u64);
        self.prefix_queries.inc_by(prompt as u64);
        for r in reasons {
            self.success.with_label_values(&[r]).inc();
        }
        self.e2e.observe(e2e);
        if let Some(t) = ttft {
            self.ttft.observe(t);
            let rows = reasons.len().max(1);
            let per_row = completion as f64 / rows as f64;
            if per_row > 1.0 {
                self.tpot.observe((e2e - t).max(0.0) / (per_row - 1.0));
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = vec![];
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# cannot encode the metrics: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_and_renders_vllm_names() {
        let m = Metrics::new("m.gguf").unwrap();
        m.finished(5, 0, 16, &["length"], Some(0.02), 0.5);
        m.finished(7, 4, 3, &["stop", "stop"], Some(0.01), 0.1);
        assert_eq!((m.prefix_hits.get(), m.prefix_queries.get()), (4, 12));
        assert_eq!((m.prompt_tokens.get(), m.generation_tokens.get()), (12, 19));
        assert_eq!(m.success.with_label_values(&["stop"]).get(), 2);
        let text = m.render();
        for name in [
            "vllm:num_requests_running{",
            "vllm:generation_tokens_total{model_name=\"m.gguf\"} 19",
            "vllm:time_to_first_token_seconds_count{model_name=\"m.gguf\"} 2",
            "vllm:e2e_request_latency_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
