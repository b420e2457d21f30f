//! The relation head of run-time widths (`method::head`) against the dfdx modules it replaced
//! (`Linear<2F, 256>` → `BatchNorm1D<256>` → LeakyReLU → `Linear<256, OUT>`, kept here as the
//! reference): the same initial weights from the same device seed, the same outputs, input and
//! parameter gradients and running statistics, bit for bit, and checkpoints that load both ways.
//! Then what the new knobs do: `sum`/`mean`/`max` aggregation (input width F) and other hidden
//! widths.

use dfdx::nn::modules;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use spatial_reasoning::config::Aggregation;
use spatial_reasoning::method::head::{aggregate, input_width, HeadSpec, RelationHead};
use spatial_reasoning::models::FEATURES;

const IN: usize = 2 * FEATURES;

/// The head as it was: dfdx's const-width modules.
#[derive(Clone, Debug)]
struct OldHead<const OUT: usize> {
    l1: modules::Linear<IN, 256, f32, Cpu>,
    bn: modules::BatchNorm1D<256, f32, Cpu>,
    l2: modules::Linear<256, OUT, f32, Cpu>,
}

impl<const OUT: usize> TensorCollection<f32, Cpu> for OldHead<OUT> {
    type To<E2: Dtype, D2: Device<E2>> = OldHead<OUT>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, Cpu>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        // Only visited (save, load, gradients), never rebuilt.
        visitor.visit_fields(
            (
                Self::module("l1", |s| &s.l1, |s| &mut s.l1),
                Self::module("bn", |s| &s.bn, |s| &mut s.bn),
                Self::module("l2", |s| &s.l2, |s| &mut s.l2),
            ),
            |_| unreachable!("the test never converts the reference head"),
        )
    }
}

impl<const OUT: usize> OldHead<OUT> {
    fn build(dev: &Cpu) -> Self {
        OldHead {
            l1: BuildModule::build(dev),
            bn: BuildModule::build(dev),
            l2: BuildModule::build(dev),
        }
    }
    fn forward_train(
        &mut self,
        x: Tensor<(usize, Const<IN>), f32, Cpu, OwnedTape<f32, Cpu>>,
    ) -> Tensor<(usize, Const<OUT>), f32, Cpu, OwnedTape<f32, Cpu>> {
        let h = self.l1.forward(x);
        let h = self.bn.forward_mut(h);
        self.l2.forward(h.prelu(0.01))
    }
    fn forward_eval(&self, x: Tensor<(usize, Const<IN>), f32, Cpu>) -> Vec<f32> {
        let h = self.l1.forward(x);
        let h = self.bn.forward(h);
        self.l2.forward(h.prelu(0.01)).as_vec()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn rand(dev: &Cpu, m: usize, n: usize) -> Tensor<(usize, usize), f32, Cpu> {
    dev.sample_normal_like(&(m, n))
}

fn same_as_dfdx<const OUT: usize>() {
    let spec = HeadSpec {
        outputs: OUT,
        ..HeadSpec::sr()
    };
    let mut old = OldHead::<OUT>::build(&Cpu::seed_from_u64(7));
    let mut new = RelationHead::new(&Cpu::seed_from_u64(7), spec).unwrap();
    assert_eq!(new.spec(), spec);
    assert_eq!(bits(&old.l1.weight.as_vec()), bits(&new.l1.weight.as_vec()));
    assert_eq!(bits(&old.l1.bias.as_vec()), bits(&new.l1.bias.as_vec()));
    assert_eq!(bits(&old.l2.weight.as_vec()), bits(&new.l2.weight.as_vec()));
    assert_eq!(bits(&old.l2.bias.as_vec()), bits(&new.l2.bias.as_vec()));
    assert_eq!(
        old.num_trainable_params(),
        new.num_trainable_params(),
        "same trainable tensors"
    );

    let dev = Cpu::seed_from_u64(11);
    let m = 37;
    let x = rand(&dev, m, IN);
    let r = rand(&dev, m, OUT);
    // Two steps: the second reads the running statistics the first updated.
    for _ in 0..2 {
        let xo = x.clone().realize::<(usize, Const<IN>)>();
        let go = old.alloc_grads();
        let yo = old.forward_train(xo.clone().traced(go));
        let yo_v = yo.as_vec();
        let lo = (yo.realize::<(usize, usize)>() * r.clone()).sum();
        let grads_o = lo.backward();

        let gn = new.alloc_grads();
        let yn = new.forward_train(x.clone().traced(gn)).unwrap();
        let yn_v = yn.as_vec();
        let ln = (yn * r.clone()).sum();
        let grads_n = ln.backward();

        assert_eq!(bits(&yo_v), bits(&yn_v), "training outputs");
        let pairs: [(Vec<f32>, Vec<f32>); 6] = [
            (
                grads_o.get(&old.l1.weight).as_vec(),
                grads_n.get(&new.l1.weight).as_vec(),
            ),
            (
                grads_o.get(&old.l1.bias).as_vec(),
                grads_n.get(&new.l1.bias).as_vec(),
            ),
            (
                grads_o.get(&old.bn.scale).as_vec(),
                grads_n.get(&new.bn.scale).as_vec(),
            ),
            (
                grads_o.get(&old.bn.bias).as_vec(),
                grads_n.get(&new.bn.bias).as_vec(),
            ),
            (
                grads_o.get(&old.l2.weight).as_vec(),
                grads_n.get(&new.l2.weight).as_vec(),
            ),
            (
                grads_o.get(&old.l2.bias).as_vec(),
                grads_n.get(&new.l2.bias).as_vec(),
            ),
        ];
        for (a, b) in &pairs {
            assert_eq!(bits(a), bits(b), "parameter gradients");
        }
        assert_eq!(
            bits(&old.bn.running_mean.as_vec()),
            bits(&new.bn.running_mean.as_vec())
        );
        assert_eq!(
            bits(&old.bn.running_var.as_vec()),
            bits(&new.bn.running_var.as_vec())
        );
    }
    let eval_old = old.forward_eval(x.clone().realize());
    let eval_new = new.forward_eval(x).unwrap().as_vec();
    assert_eq!(bits(&eval_old), bits(&eval_new), "evaluation outputs");
}

#[test]
fn default_head_computes_what_the_dfdx_modules_computed() {
    same_as_dfdx::<1>();
    same_as_dfdx::<3>();
}

#[test]
fn checkpoints_load_both_ways_with_the_old_names() {
    let dir = std::env::temp_dir().join(format!("sr-head-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = OldHead::<3>::build(&Cpu::seed_from_u64(1));
    let old_file = dir.join("old.safetensors");
    old.save_safetensors(&old_file).unwrap();
    // An old checkpoint has no `aggregation` entry: it loads as cat.
    let new = RelationHead::new(
        &Cpu::seed_from_u64(2),
        HeadSpec {
            aggregation: Aggregation::Max,
            ..HeadSpec::sr()
        },
    )
    .unwrap();
    assert_eq!(new.l1.weight.shape().1, FEATURES);
    let mut cat = RelationHead::new(&Cpu::seed_from_u64(2), HeadSpec::sr()).unwrap();
    cat.aggregation = Aggregation::Max; // overwritten by the default on load
    cat.load_safetensors(&old_file).unwrap();
    assert_eq!(cat.aggregation, Aggregation::Cat);
    assert_eq!(cat.l2.bias.as_vec(), old.l2.bias.as_vec());
    assert_eq!(cat.bn.running_var.as_vec(), old.bn.running_var.as_vec());
    // The new head saves under the same names (plus `aggregation`), so the reference reads it.
    let new_file = dir.join("new.safetensors");
    cat.l1.weight = cat.l1.weight.clone() * 2.0;
    cat.save_safetensors(&new_file).unwrap();
    let mut back = OldHead::<3>::build(&Cpu::seed_from_u64(3));
    back.load_safetensors(&new_file).unwrap();
    assert_eq!(back.l1.weight.as_vec(), cat.l1.weight.as_vec());
    // The aggregation round-trips, and a head of the wrong width is an error, not a silent load.
    new.save_safetensors(&new_file).unwrap();
    let mut again = RelationHead::new(
        &Cpu::seed_from_u64(4),
        HeadSpec {
            aggregation: Aggregation::Sum,
            ..HeadSpec::sr()
        },
    )
    .unwrap();
    again.load_safetensors(&new_file).unwrap();
    assert_eq!(again.aggregation, Aggregation::Max);
    assert!(
        cat.load_safetensors(&new_file).is_err(),
        "2F head from an F file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn aggregations_combine_the_pair_as_the_rr_paper_does() {
    let dev = Cpu::default();
    let a: Tensor<(usize, Const<FEATURES>), f32, Cpu> = dev.sample_normal_like(&(3, Const));
    let b: Tensor<(usize, Const<FEATURES>), f32, Cpu> = dev.sample_normal_like(&(3, Const));
    let (av, bv) = (a.as_vec(), b.as_vec());
    let get = |agg| aggregate(a.clone(), b.clone(), agg).unwrap();
    let cat = get(Aggregation::Cat);
    assert_eq!(*cat.shape(), (3, 2 * FEATURES));
    assert_eq!(cat.as_vec()[..FEATURES], av[..FEATURES]);
    assert_eq!(cat.as_vec()[FEATURES..2 * FEATURES], bv[..FEATURES]);
    let want = |f: fn(f32, f32) -> f32| -> Vec<f32> {
        av.iter().zip(&bv).map(|(&x, &y)| f(x, y)).collect()
    };
    assert_eq!(get(Aggregation::Sum).as_vec(), want(|x, y| x + y));
    assert_eq!(get(Aggregation::Mean).as_vec(), want(|x, y| (x + y) / 2.0));
    assert_eq!(get(Aggregation::Max).as_vec(), want(f32::max));
    for agg in Aggregation::ALL {
        assert_eq!(get(agg).shape().1, input_width(agg), "{agg:?}");
    }
    // Gradients reach both sides: max sends each element's gradient to the larger input.
    let y = aggregate(
        a.clone().leaky_traced(),
        b.clone().retaped::<OwnedTape<f32, Cpu>>(),
        Aggregation::Max,
    )
    .unwrap();
    let ga = y.sum().backward().get(&a).as_vec();
    let expect: Vec<f32> = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| if x > y { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(ga, expect);
}

#[test]
fn other_widths_and_aggregations_train() {
    let dev = Cpu::seed_from_u64(5);
    for (aggregation, hidden) in [
        (Aggregation::Sum, 64),
        (Aggregation::Mean, 512),
        (Aggregation::Max, 32),
        (Aggregation::Cat, 100),
    ] {
        let spec = HeadSpec {
            aggregation,
            hidden,
            outputs: 3,
        };
        let mut head = RelationHead::new(&dev, spec).unwrap();
        assert_eq!(head.spec(), spec);
        assert_eq!(*head.l1.weight.shape(), (hidden, input_width(aggregation)));
        assert_eq!(*head.l2.weight.shape(), (3, hidden));
        assert_eq!(
            head.num_trainable_params(),
            (input_width(aggregation) + 1) * hidden + 2 * hidden + (hidden + 1) * 3
        );
        // A few plain gradient steps on a fixed batch lower a squared error.
        let x = rand(&dev, 16, input_width(aggregation));
        let t = rand(&dev, 16, 3);
        let mut losses = vec![];
        for _ in 0..5 {
            let grads = head.alloc_grads();
            let y = head.forward_train(x.clone().traced(grads)).unwrap();
            let loss = (y - t.clone()).square().mean();
            losses.push(loss.array());
            let g = loss.backward();
            head.l1.weight = head.l1.weight.clone() - g.get(&head.l1.weight) * 0.01;
            head.l2.weight = head.l2.weight.clone() - g.get(&head.l2.weight) * 0.01;
            head.l2.bias = head.l2.bias.clone() - g.get(&head.l2.bias) * 0.01;
        }
        assert!(
            losses[4] < losses[0],
            "{aggregation:?} {hidden}: {losses:?}"
        );
    }
}
