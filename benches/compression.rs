#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Each codec's compression throughput and ratio on compressible (text, JSON) and
//! incompressible (random) payloads. Ratios are printed once per input.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qwire::protocol::Compression;
use rand::{Rng, SeedableRng};

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let words = ["order", "payment", "customer", "shipped", "the", "quick", "brown", "fox", "latency", "broker"];
    let mut text = String::new();
    while text.len() < 256 * 1024 {
        text.push_str(words[rng.gen_range(0..words.len())]);
        text.push(' ');
    }
    let mut json = String::new();
    let mut i = 0;
    while json.len() < 256 * 1024 {
        json.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user-{}\",\"event\":\"{}\",\"amount\":{}.{:02}}}\n",
            rng.gen_range(0..500),
            words[rng.gen_range(0..words.len())],
            rng.gen_range(0..1000),
            rng.gen_range(0..100)
        ));
        i += 1;
    }
    let random: Vec<u8> = (0..256 * 1024).map(|_| rng.gen()).collect();
    vec![("text", text.into_bytes()), ("json", json.into_bytes()), ("random", random)]
}

fn codecs(c: &mut Criterion) {
    for (name, data) in inputs() {
        let mut g = c.benchmark_group(format!("compress/{name}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        for codec in Compression::ALL.into_iter().skip(1) {
            let mut out = Vec::new();
            codec.compress(&data, None, &mut out);
            eprintln!("ratio {name} {codec}: {:.2}", data.len() as f64 / out.len() as f64);
            g.bench_with_input(BenchmarkId::new("compress", codec), &data, |b, d| {
                b.iter(|| {
                    let mut out = Vec::with_capacity(d.len());
                    codec.compress(d, None, &mut out);
                    out
                })
            });
            g.bench_with_input(BenchmarkId::new("decompress", codec), &out, |b, o| {
                b.iter(|| codec.decompress(o, data.len()).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
